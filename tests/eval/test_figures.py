"""The figures of the studies, in eval/: AHM Fig. 8, the reward curve, segmentation rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from medmask.eval.figures import policy_figure, reward_curve, segmentation_figure
from medmask.masking import PatchGrid
from medmask.rl import MaskingPolicyNet


def test_policy_figure_has_four_columns_per_image():
    torch.manual_seed(0)
    net = MaskingPolicyNet(1, PatchGrid(32, 32, patch_size=8), channels=8)
    images = np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)
    gallery = policy_figure(net.eval(), images, ratio=0.75, random_share=0.3)
    assert gallery.dtype == np.uint8 and gallery.shape[-1] == 3
    assert gallery.shape[1] > 4 * 32 and gallery.shape[0] > 2 * 32  # 4 columns x 2 rows


def test_reward_curve_and_segmentation_rows():
    history = pd.DataFrame({"steps": [1, 2, 3], "reward": [0.1, 0.2, 0.25]})
    figure = reward_curve(history, x="steps", y="reward")
    assert list(figure.axes[0].lines[0].get_ydata()) == [0.1, 0.2, 0.25]
    images = np.zeros((2, 16, 16), np.float32)
    labels = np.zeros((2, 16, 16), np.uint8)
    labels[:, 4:8, 4:8] = 1
    assert segmentation_figure(images, labels, labels).shape[1] > 3 * 16

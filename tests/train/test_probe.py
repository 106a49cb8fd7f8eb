"""The convergence probe: the multi-label logistic probe, its NaN labels, the convergence
epoch, and the probe of a frozen encoder (in-process, no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medmask.eval import multilabel_logistic_probabilities
from medmask.train._probe import EpochProbe, convergence_epoch, probe_scores


def test_convergence_is_the_first_epoch_at_95_percent_of_the_best():
    # best 0.9 -> threshold 0.855: epoch 2 (0.86 at epoch 3 comes later)
    assert convergence_epoch({0: 0.5, 1: 0.8, 2: 0.9, 3: 0.86}) == 2
    assert convergence_epoch({0: 0.5, 1: 0.86, 2: 0.9}) == 1
    assert convergence_epoch({0: 0.85, 1: 0.9}) == 1  # 0.85 < 0.855: not yet
    assert convergence_epoch({0: math.nan, 4: 0.7, 9: 0.7}) == 4
    assert convergence_epoch({0: math.nan}) is None


def test_the_multilabel_probe_fits_each_label_on_its_own():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = np.stack([x[:, 0] > 0, x[:, 1] < 0], axis=1).astype(np.float64)  # label k <- feature k
    probs = multilabel_logistic_probabilities(x[:100], y[:100], x[100:])
    assert probs.shape == (100, 2)
    assert ((probs[:, 0] > 0.5) == (y[100:, 0] > 0)).mean() > 0.95
    assert ((probs[:, 1] > 0.5) == (y[100:, 1] > 0)).mean() > 0.95
    with pytest.raises(ValueError, match=r"\[n, K\]"):
        multilabel_logistic_probabilities(x, y[:, 0], x)


class _Mean(torch.nn.Module):
    """encode = the mean of each image's left and right halves (no parameters to train)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        w = images.shape[-1] // 2
        return torch.stack([images[..., :w].mean((1, 2, 3)), images[..., w:].mean((1, 2, 3))], 1)


def test_probe_scores_measure_auc_and_count_labels_without_positives():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(80, 1, 8, 8, generator=g)
    left = images[..., :4].mean((1, 2, 3))
    labels = torch.stack([(left > left.median()).float(), torch.zeros(80)], dim=1)
    model = _Mean().train()
    scores = probe_scores(model, (images[:40], labels[:40]), (images[40:], labels[40:]),
                          torch.device("cpu"))
    assert scores["probe/auc_0"] == pytest.approx(1.0)
    assert math.isnan(scores["probe/auc_1"]) and scores["probe/auc_nan_count"] == 1.0
    assert scores["probe/auc_mean"] == pytest.approx(1.0)  # the NaN label is left out
    assert model.training  # the probe puts the model back in its mode


def test_the_probe_runs_every_k_epochs_and_at_the_last_on_rank_0_only():
    probe = EpochProbe({"every": 3}, rank=0, epochs=8)
    assert [e for e in range(8) if probe.due(e)] == [2, 5, 7]
    assert not any(EpochProbe({"every": 3}, rank=1, epochs=8).due(e) for e in range(8))
    assert not any(EpochProbe(None, rank=0, epochs=8).due(e) for e in range(8))

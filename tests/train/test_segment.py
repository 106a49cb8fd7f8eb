"""Segmentation fine-tuning pieces: loss, predictions, AHM metrics per target, weight transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmask.models import create_model
from medmask.train import build_segmenter, save_checkpoint, score_segmentation
from medmask.train._segment import check_target, predicted_labels, segmentation_loss


def test_binary_loss_is_bce_plus_soft_dice_by_hand() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[1, 0], [0, 0]]])
    bce = float(np.log(2.0))  # -log(0.5) on every pixel
    dice = (2 * 0.5 + 1.0) / (2.0 + 1.0 + 1.0)  # overlap 0.5, sum p 2, sum t 1, smooth 1
    assert segmentation_loss(logits, target).item() == pytest.approx(bce + 1 - dice, rel=1e-6)


def test_multiclass_loss_ignores_background_in_dice() -> None:
    target = torch.tensor([[[0, 1], [2, 3]]])
    perfect = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50
    assert segmentation_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    assert segmentation_loss(-perfect, target).item() > 1.0


def test_predicted_labels_threshold_and_argmax() -> None:
    binary = torch.tensor([[[[-1.0, 0.5]]]])
    assert predicted_labels(binary).tolist() == [[[0, 1]]]
    multi = torch.tensor([[[[0.0]], [[2.0]], [[1.0]]]])  # [1, 3, 1, 1]
    assert predicted_labels(multi).tolist() == [[[1]]]


def test_scores_match_ahm_metrics_binary_and_per_organ() -> None:
    target = np.zeros((2, 8, 8), np.uint8)
    target[:, 2:6, 2:6] = 1
    pred = target.copy()
    pred[1] = 0  # second image: empty prediction against a 16-pixel lesion
    scores = score_segmentation(pred, target, num_outputs=1)
    eps = 1e-4
    assert scores["dice"] == pytest.approx((1.0 + eps / (16 + eps)) / 2)
    assert scores["hd95_nan_count"] == 1 and scores["hd95"] == 0.0
    organs = np.zeros((1, 8, 8), np.uint8)
    organs[0, :, :3], organs[0, :, 5:], organs[0, 3:5, 3:5] = 1, 2, 3
    perfect = score_segmentation(organs, organs, num_outputs=4)
    assert perfect["dice"] == pytest.approx(1.0)
    assert {"dice_right_lung", "dice_left_lung", "dice_heart"} <= set(perfect)
    swapped = organs.copy()
    swapped[organs == 1], swapped[organs == 2] = 2, 1
    assert score_segmentation(swapped, organs, num_outputs=4)["dice_heart"] == pytest.approx(1.0)
    assert score_segmentation(swapped, organs, num_outputs=4)["dice_left_lung"] < 1e-3


def test_segmenter_starts_from_the_pretrained_unet_body(tmp_path) -> None:
    unet = create_model("unet_tiny", img_size=32, patch_size=8)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(1.0)
    save_checkpoint(tmp_path, {"model": unet.state_dict()})
    config = {"model": {"name": "unet_tiny", "params": {"img_size": 32, "patch_size": 8}},
              "target": "lesion"}
    pretrained = build_segmenter({**config, "pretrained": str(tmp_path)})
    scratch = build_segmenter({**config, "pretrained": None})
    for name, value in unet.body.state_dict().items():
        assert torch.equal(pretrained.body.state_dict()[name], value)
    assert not torch.equal(scratch.body.state_dict()[name], value)
    assert pretrained(torch.rand(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_unknown_target_and_non_unet_models_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be one of"):
        check_target("tumour")
    with pytest.raises(ValueError, match="needs a U-Net"):
        build_segmenter({"model": {"name": "mae_vit_tiny_64", "params": {}}, "target": "lesion"})


def test_small_label_fractions_get_the_minimum_step_budget() -> None:
    from medmask.train._stages import segmentation_repeats

    assert segmentation_repeats(6, 150, steps_per_epoch=48) == 1  # 288 steps already
    assert segmentation_repeats(6, 150, steps_per_epoch=5) == 5  # 10%: 30 steps -> x5 = 150
    assert segmentation_repeats(6, 0, steps_per_epoch=5) == 1


def test_ahm_settings_reject_unknown_methods_targets_and_keys_before_compute() -> None:
    from medmask.train import SegmentationSettings, settings_from_dict
    from medmask.train._segment import TARGETS
    from medmask.train._settings import SEGMENTATION_TARGETS

    base = {"epochs": 1, "batch_size": 4}
    with pytest.raises(ValueError, match=r"methods must be among .*\['mae'\]"):
        settings_from_dict(SegmentationSettings, {**base, "methods": ["ahm", "mae"]})
    with pytest.raises(ValueError, match="target must be one of"):
        settings_from_dict(SegmentationSettings, {**base, "target": "tumour"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['fractons'\]"):
        settings_from_dict(SegmentationSettings, {**base, "fractons": [0.1]})
    assert set(SEGMENTATION_TARGETS) == set(TARGETS)  # the settings and the loop agree

"""Option 5 (seg_attention) and its control (simclr_recon): exact loss terms on hand-computed
masks, the view-to-view warp, the collapse measures, and one in-process training step."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from medmask import columns as C
from medmask.data.phantom import generate
from medmask.keyed import image_keys
from medmask.methods import SegAttentionParams, consistency_loss, create_method, seg_attention_loss
from medmask.methods import _seg_attention as seg_module
from medmask.methods._seg_attention import MaskMonitor, lung_bce, mask_dice, mask_spatial_std
from medmask.segmentation import AugmentParams, context_augment, warp_between_views


def _params(angle: list[float], flip: list[bool]) -> AugmentParams:
    n = len(angle)
    return AugmentParams(torch.tensor(angle, dtype=torch.float64), torch.tensor(flip),
                         torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64),
                         torch.zeros(n, dtype=torch.bool))


def _geometry(maps: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """The augmentation's own resampling of maps [B, 1, h, w] (no photometric change)."""
    return context_augment(maps, params=params).images


def test_a_flipped_mask_warps_back_exactly():
    g = torch.Generator().manual_seed(0)
    m1 = torch.rand(2, 1, 6, 8, generator=g)
    plain, flipped = _params([0.0, 0.0], [False, False]), _params([0.0, 0.0], [True, True])
    m2 = _geometry(m1, flipped)
    assert torch.allclose(m2, torch.flip(m1, dims=[3]), atol=1e-6)  # the augmentation's flip
    warped, overlap = warp_between_views(m2, flipped, plain)
    assert torch.allclose(warped, m1, atol=1e-6) and overlap.all()


def test_the_warp_undoes_the_known_rotation_and_flip_of_each_view():
    """view k = T_k(image): W(view 2) = view 1 inside the overlap, for rotations of 90 degrees
    (pixel centres map to pixel centres: exact) composed with flips, one per sample."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 1, 8, 8, generator=g)
    first, second = _params([90.0, 0.0, -90.0], [False, True, True]), _params(
        [0.0, 90.0, 180.0], [True, False, True])
    view1, view2 = _geometry(image, first), _geometry(image, second)
    warped, overlap = warp_between_views(view2, second, first)
    assert overlap.all() and torch.allclose(warped, view1, atol=1e-5)
    same, _ = warp_between_views(view1, first, first)
    assert torch.allclose(same, view1, atol=1e-6)


def test_the_overlap_leaves_out_what_one_view_does_not_show():
    image = torch.ones(1, 1, 16, 16)
    first, second = _params([0.0], [False]), _params([10.0], [False])
    _, overlap = warp_between_views(_geometry(image, second), second, first)
    assert 0.8 < overlap.float().mean() < 1.0 and overlap[0, 0, 8, 8]  # corners fall out
    assert not overlap[0, 0, 0, 0]


def test_consistency_modes_on_hand_computed_masks():
    """m1 = left half 1, view 2 its mirror (right half 1): literal MSE = 1 everywhere, warped
    = 0 (the same lungs once mirrored back); against a constant 0.5 mask both give 0.25."""
    m1 = torch.zeros(1, 1, 4, 4)
    m1[..., :2] = 1.0
    plain, flipped = _params([0.0], [False]), _params([0.0], [True])
    m2 = torch.flip(m1, dims=[3])
    assert consistency_loss(m1, m2, plain, flipped, "literal").item() == pytest.approx(1.0)
    assert consistency_loss(m1, m2, plain, flipped, "warped").item() == pytest.approx(0.0,
                                                                                  abs=1e-7)
    half = torch.full_like(m1, 0.5)
    for mode in ("literal", "warped"):
        assert consistency_loss(m1, half, plain, flipped, mode).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="warped"):
        consistency_loss(m1, m2, plain, flipped, "mirrored")


def test_the_multi_task_loss_is_the_guides_weighted_sum():
    """NT-Xent at tau = 1 of the hand batch of test_contrastive (0.616314), reconstruction
    zeros vs 0.5 (MSE 0.25), literal consistency 1: 1.0 x 0.616314 + 0.5 x 0.25 + 0.2 x 1;
    the BCE deviation of masks 0.5 vs full lungs adds 0.2 x log 2."""
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    view1, recon = torch.full((2, 1, 8, 8), 0.5), torch.zeros(2, 1, 8, 8)
    m1 = torch.zeros(2, 1, 2, 2)
    m1[..., 0] = 1.0
    m2 = torch.flip(m1, dims=[3])
    plain, flipped = _params([0.0, 0.0], [False, False]), _params([0.0, 0.0], [True, True])
    settings = SegAttentionParams(temperature=1.0, consistency="literal")
    terms = seg_attention_loss(z1, z2, recon, view1, m1, m2, plain, flipped, settings)
    assert terms.contrastive.item() == pytest.approx(0.616314, abs=1e-5)
    assert terms.reconstruction.item() == pytest.approx(0.25)
    assert terms.consistency.item() == pytest.approx(1.0)
    assert terms.total.item() == pytest.approx(0.616314 + 0.125 + 0.2, abs=1e-5)
    warped = seg_attention_loss(z1, z2, recon, view1, m1, m2, plain, flipped,
                                SegAttentionParams(temperature=1.0))
    assert warped.consistency.item() == pytest.approx(0.0, abs=1e-7)
    assert warped.total.item() == pytest.approx(0.616314 + 0.125, abs=1e-5)
    half = torch.full((2, 1, 2, 2), 0.5)
    lungs = torch.ones(2, 8, 8, dtype=torch.bool)
    bce = seg_attention_loss(z1, z2, recon, view1, half, half, plain, plain,
                             SegAttentionParams(temperature=1.0, lung_bce_weight=0.2),
                             (lungs, lungs))
    assert bce.lung_bce.item() == pytest.approx(math.log(2), abs=1e-6)
    assert bce.total.item() == pytest.approx(0.616314 + 0.125 + 0.2 * math.log(2), abs=1e-5)
    assert lung_bce(torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 4, 4)).item() == pytest.approx(
        math.log(2), abs=1e-6)


def test_mask_dice_and_spatial_std_by_hand():
    """[[1, 0], [0, 0]] upsampled to 4 x 4 (bilinear) is > 0.5 on the top-left 2 x 2 block
    (1, .75, .75, .5625); lungs = the top two rows: Dice = 2 x 4 / (4 + 8) = 2/3. Its spatial
    std (sample): sqrt((.75^2 + 3 x .25^2) / 3) = 0.5."""
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    lungs = torch.zeros(1, 4, 4, dtype=torch.bool)
    lungs[:, :2] = True
    assert mask_dice(mask, lungs).item() == pytest.approx(2 / 3)
    assert mask_spatial_std(mask).item() == pytest.approx(0.5)
    assert mask_spatial_std(torch.full((1, 1, 3, 3), 0.7)).item() == pytest.approx(0.0, abs=1e-6)
    assert mask_dice(torch.zeros(1, 1, 2, 2), torch.zeros(1, 4, 4)).item() == 0.0


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_monitor_averages_per_epoch_and_warns_on_a_collapse():
    terms = seg_attention_loss(*[torch.eye(2)] * 2, torch.zeros(2, 1, 4, 4),
                               torch.zeros(2, 1, 4, 4), *[torch.full((2, 1, 2, 2), 0.5)] * 2,
                               *[_params([0.0, 0.0], [False, False])] * 2, SegAttentionParams())
    lungs = torch.zeros(2, 4, 4, dtype=torch.bool)
    lungs[:, :2] = True
    records = _Records()
    logging.getLogger(seg_module.__name__).addHandler(records)
    monitor = MaskMonitor()
    monitor.add(terms, torch.full((2, 1, 2, 2), 0.5), lungs)  # constant: std 0, Dice 0
    metrics = monitor.epoch_metrics()
    assert metrics["train/seg_mask_std"] == 0.0 and metrics["train/seg_mask_collapsed"] == 1.0
    assert "collapsed" in records.messages[0] and monitor.epoch_metrics() == {}  # reset
    good = torch.zeros(2, 1, 2, 2)
    good[:, :, 0] = 1.0  # the top row: exactly the lungs
    monitor.add(terms, good, lungs)
    metrics = monitor.epoch_metrics()
    assert metrics["train/seg_mask_dice"] == pytest.approx(1.0)
    assert metrics["train/seg_mask_collapsed"] == 0.0 and len(records.messages) == 1
    logging.getLogger(seg_module.__name__).removeHandler(records)
    assert {"train/loss_contrastive", "train/loss_consistency"} <= set(metrics)


def _batch(n: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    rows = generate(n, size, 0)
    return {C.IMAGE: torch.from_numpy(rows[C.IMAGE]), C.ORGANS: torch.from_numpy(rows[C.ORGANS]),
            C.IMAGE_KEY: torch.from_numpy(image_keys(rows[C.ID]))}


def _config(method: str, model: str, **params) -> dict:
    return {"seed": 0, "mixed_precision": False, "method_params": params,
            "model": {"name": model, "params": {"img_size": 32}}}


@pytest.mark.parametrize("method, model, params", [
    ("seg_attention", "seg_attention_cnn_tiny", {}),
    ("seg_attention", "seg_attention_cnn_tiny", {"consistency": "literal",
                                                 "lung_bce_weight": 0.2}),
    ("simclr_recon", "contrastive_cnn_tiny", {}),
])
def test_one_training_step_reaches_every_branch(method, model, params):
    torch.manual_seed(0)
    parts = create_method(method).build(_config(method, model, **params), torch.device("cpu"),
                                        None)
    loss, count = parts.batch_loss(parts.model, _batch(), 0)
    assert count == 4 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    trained = ["decoder"] + (["segmentation", "attention3", "attention4"]
                             if method == "seg_attention" else [])
    for name in trained:
        grads = [p.grad for p in getattr(parts.model, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    if method == "seg_attention":
        metrics = parts.epoch_metrics()
        assert 0.0 <= metrics["train/seg_mask_dice"] <= 1.0 and metrics["train/seg_mask_std"] > 0


def test_the_methods_check_their_model_and_params():
    with pytest.raises(ValueError, match="model=seg_attention_tiny"):
        create_method("seg_attention").build(_config("seg_attention", "contrastive_cnn_tiny"),
                                             torch.device("cpu"), None)
    with pytest.raises(ValueError, match="unknown; valid"):
        create_method("seg_attention").build(
            _config("seg_attention", "seg_attention_cnn_tiny", gamma=0.3), torch.device("cpu"),
            None)
    with pytest.raises(ValueError, match="consistency must be one of"):
        SegAttentionParams(consistency="flipped")
    no_decoder = {**_config("simclr_recon", "contrastive_cnn_tiny"),
                  "model": {"name": "contrastive_cnn_tiny", "params": {}}}
    with pytest.raises(ValueError, match="img_size"):
        create_method("simclr_recon").build(no_decoder, torch.device("cpu"), None)
    parts = create_method("simclr_recon").build(
        {**_config("simclr_recon", "contrastive_cnn_tiny"),
         "model": {"name": "contrastive_cnn_tiny", "params": {"img_size": 64}}},
        torch.device("cpu"), None)
    with pytest.raises(ValueError, match="reconstructs 64-px images"):
        parts.batch_loss(parts.model, _batch(), 0)

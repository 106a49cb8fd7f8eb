"""Contrastive methods: exact NT-Xent and weighted losses on hand-computed batches, keyed views
that keep image and organ map aligned, and one in-process training step of every method."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medmask import columns as C
from medmask.data.phantom import generate
from medmask.keyed import image_keys
from medmask.methods import (
    create_method,
    nt_xent,
    nt_xent_pair_terms,
    two_views,
    weighted_nt_xent,
)
from medmask.methods._contrastive import (
    lung_share,
    multi_region_nt_xent,
    pathology_share,
)
from medmask.segmentation import context_augment, keyed_augment_params
from tests.methods.toy_contrastive import nt_xent as cross_entropy_nt_xent

CONTRASTIVE = ("simclr", "masked_contrastive", "pathology_aware", "seg_crop", "multi_region")

# Views (rows of cat[z1, z2]): v0 = e1, v1 = e2 | v2 = e1, v3 = -e1; positives 0<->2, 1<->3.
# Cosines: v0: (v1 0, v2 1, v3 -1); v1: (v0 0, v2 0, v3 0); v2: (v0 1, v1 0, v3 -1);
# v3: (v0 -1, v1 0, v2 -1). With t = 1 / tau, l(k -> k+) = log sum_{j != k} e^{t s_kj} - t s_k+:
#   a0 = a2 = log(1 + e^t + e^-t) - t,   a1 = log 3,   a3 = log(1 + 2 e^-t),
#   l_0 = (a0 + a2) / 2 = log(1 + e^t + e^-t) - t,   l_1 = (log 3 + log(1 + 2 e^-t)) / 2.
Z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
Z2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])


def _hand_terms(tau: float) -> tuple[float, float]:
    t = 1.0 / tau
    return (math.log(1 + math.exp(t) + math.exp(-t)) - t,
            (math.log(3) + math.log(1 + 2 * math.exp(-t))) / 2)


@pytest.mark.parametrize("tau", [1.0, 0.5, 0.1])
def test_nt_xent_pair_terms_match_the_hand_computed_values(tau):
    l0, l1 = _hand_terms(tau)
    terms = nt_xent_pair_terms(Z1, Z2, tau)
    assert torch.allclose(terms, torch.tensor([l0, l1]), atol=1e-5)
    assert nt_xent(Z1, Z2, tau).item() == pytest.approx((l0 + l1) / 2, abs=1e-5)
    # tau = 1: l_0 = log(1 + e + 1/e) - 1 = 0.407603, l_1 = 0.825025 (by hand)
    if tau == 1.0:
        assert terms.tolist() == pytest.approx([0.407603, 0.825025], abs=1e-5)


def test_nt_xent_is_simclrs_cross_entropy_over_the_2b_anchors():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert nt_xent(z1, z2, 0.1).item() == pytest.approx(cross_entropy_nt_xent(z1, z2, 0.1).item(),
                                                        rel=1e-5)
    # scale-free: projections are normalized
    assert nt_xent(3 * z1, z2, 0.1).item() == pytest.approx(nt_xent(z1, z2, 0.1).item(), rel=1e-5)


def test_weighted_nt_xent_matches_the_hand_computed_value():
    # c1 = (1, 0), c2 = (0.5, 0), w = 0.3: pair 0 x (1 + 0.3 x 0.75) = 1.225, pair 1 x 1
    l0, l1 = _hand_terms(1.0)
    loss = weighted_nt_xent(Z1, Z2, torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0]), 0.3, 1.0)
    assert loss.item() == pytest.approx((1.225 * l0 + l1) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.662172, abs=1e-5)
    zero = torch.zeros(2)
    assert weighted_nt_xent(Z1, Z2, zero, zero, 0.3, 1.0).item() == pytest.approx(
        nt_xent(Z1, Z2, 1.0).item(), abs=1e-7)
    with pytest.raises(ValueError, match=r"view scores must be \[B\]"):
        weighted_nt_xent(Z1, Z2, torch.zeros(3), torch.zeros(3), 0.3)


def test_multi_region_loss_matches_the_hand_computed_value():
    """Regions: r = 0 (Z1, Z2) -> 0.616314 by hand, r = 1 the views swapped (NT-Xent is
    symmetric: the same), r = 2 identical views e1/e2 in both -> log(1 + 2/e) each pair."""
    l0, l1 = _hand_terms(1.0)
    same = math.log(1 + 2 / math.e)  # anchor e1: positive e1 (cos 1), negatives e2, e2 (cos 0)
    r1 = torch.stack([Z1, Z2, Z1], dim=1)
    r2 = torch.stack([Z2, Z1, Z1], dim=1)
    loss = multi_region_nt_xent(Z1, Z2, r1, r2, alpha=1.0, beta=0.5, temperature=1.0)
    expected = (l0 + l1) / 2 + 0.5 * ((l0 + l1) / 2 + (l0 + l1) / 2 + same)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert (l0 + l1) / 2 == pytest.approx(0.616314, abs=1e-5) and same == pytest.approx(
        0.551445, abs=1e-5)
    with pytest.raises(ValueError, match=r"\[B, R, P\]"):
        multi_region_nt_xent(Z1, Z2, Z1, Z2)


def test_regions_move_with_the_views():
    batch = _batch(8, 32)
    views = two_views(batch, seed=0, epoch=0, regions=True)
    assert views.regions1.shape == (8, 6, 32, 32) and views.regions1.dtype == torch.bool
    flip = views.params1.flip
    left, right = views.regions1[:, 3], views.regions1[:, 4]
    columns = torch.arange(32, dtype=torch.float32)
    left_x = (left * columns).flatten(1).sum(1) / left.flatten(1).sum(1)
    # the image-left half region lands on the right after a mirror, stays left otherwise
    assert ((left_x > 16) == flip).all() and flip.any() and (~flip).any()
    assert not (left & right).any()
    plain = two_views(batch, seed=0, epoch=0)
    assert plain.regions1 is None and torch.equal(plain.view1, views.view1)


def test_lung_share_counts_both_lung_codes_only():
    organs = torch.zeros(2, 4, 4, dtype=torch.uint8)
    organs[0, :2, :2] = C.ORGAN_RIGHT_LUNG  # 4 px
    organs[0, :1, 2:] = C.ORGAN_LEFT_LUNG  # 2 px
    organs[0, 3, :] = C.ORGAN_HEART  # not lung
    assert lung_share(organs).tolist() == pytest.approx([6 / 16, 0.0])


def _batch(n: int = 4, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    rows = generate(n, size, seed)
    return {C.IMAGE: torch.from_numpy(rows[C.IMAGE]), C.ORGANS: torch.from_numpy(rows[C.ORGANS]),
            C.IMAGE_KEY: torch.from_numpy(image_keys(rows[C.ID])),
            C.LABELS: torch.from_numpy(rows[C.LABELS])}


def test_views_are_keyed_per_image_and_new_each_epoch():
    batch = _batch(4)
    a = two_views(batch, seed=0, epoch=0)
    again = two_views(batch, seed=0, epoch=0)
    assert torch.equal(a.view1, again.view1) and torch.equal(a.organs2, again.organs2)
    # the same image in another batch gets the same geometry and photometric draws
    sub = {k: v[2:] for k, v in batch.items()}
    b = two_views(sub, seed=0, epoch=0)
    for full, part in zip(a.params1, b.params1, strict=True):
        assert torch.equal(full[2:], part)
    assert torch.equal(a.organs1[2:], b.organs1)
    later = two_views(batch, seed=0, epoch=1)
    assert not torch.equal(later.params1.angle_deg, a.params1.angle_deg)
    assert not torch.equal(a.params1.angle_deg, a.params2.angle_deg)  # two different views
    assert a.params1.angle_deg.abs().max() <= 10.0


def test_views_keep_image_and_organ_map_aligned():
    """The lungs resampled as an image (bilinear) and the organ map (nearest) agree wherever
    the bilinear value is exactly 0 or 1 (away from the lung edges): the organ map moved with
    the image. A flip swapped the lung codes: the right lung (1) stays on the image's left."""
    batch = _batch(8, 64)
    params = keyed_augment_params(batch[C.IMAGE_KEY].numpy(), 0, 0)[0]
    lungs = (batch[C.ORGANS] == 1) | (batch[C.ORGANS] == 2)
    out = context_augment(lungs.float(), batch[C.ORGANS], params=params._replace(
        brightness=torch.ones(8, dtype=torch.float64),
        contrast=torch.ones(8, dtype=torch.float64), noise=torch.zeros(8, dtype=torch.bool)))
    exact = (out.images < 1e-4) | (out.images > 1 - 1e-4)
    assert exact.float().mean() > 0.8
    moved = (out.organs == 1) | (out.organs == 2)
    assert torch.equal(moved[exact], (out.images > 0.5)[exact])
    columns = torch.arange(64, dtype=torch.float32)
    right_x = ((out.organs == 1) * columns).flatten(1).sum(1) / (out.organs == 1).flatten(1).sum(1)
    assert (right_x < 32).all()
    assert params.flip.any() and (~params.flip).any()  # both cases exercised
    # and the training views use these very parameters
    views = two_views(batch, seed=0, epoch=0)
    assert torch.equal(views.params1.flip, params.flip)
    assert torch.equal(views.organs1, out.organs)


def test_pathology_share_lies_inside_the_lungs():
    batch = _batch(4, 64)
    views = two_views(batch, seed=0, epoch=0)
    share = pathology_share(views.view1, views.organs1)
    assert share.shape == (4,) and (share >= 0).all()
    assert (share <= lung_share(views.organs1) + 1e-6).all()
    assert (pathology_share(views.view1, torch.zeros_like(views.organs1)) == 0).all()


def _config(name: str) -> dict:
    regions = {"regions": 6} if name == "multi_region" else {}
    config = {"seed": 0, "mixed_precision": False, "method": name, "method_params": {},
              "model": {"name": "contrastive_cnn_tiny", "params": regions},
              "crop": {"padding": 20, "min_crop_ratio": 0.5} if name == "seg_crop" else None}
    return config


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_each_method_takes_one_training_step(name):
    torch.manual_seed(0)
    method = create_method(name)
    assert not method.uses_masks and method.default_model == "contrastive_cnn_tiny"
    parts = method.build(_config(name), torch.device("cpu"), None)
    optimizer = torch.optim.SGD(parts.model.parameters(), lr=0.1)
    batch = _batch(4)
    before = [p.detach().clone() for p in parts.model.parameters()]
    loss, count = parts.batch_loss(parts.model, batch, 0)
    assert count == 4 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, parts.model.parameters(),
                                                      strict=True))


def test_the_weighted_methods_weigh_by_their_views():
    """Same model, same views: masked_contrastive = the lung-weighted SimCLR pair terms."""
    batch = _batch(4)
    torch.manual_seed(0)
    simclr = create_method("simclr").build(_config("simclr"), torch.device("cpu"), None)
    masked = create_method("masked_contrastive").build(_config("masked_contrastive"),
                                                       torch.device("cpu"), None)
    masked.model.load_state_dict(simclr.model.state_dict())
    simclr.model.train(), masked.model.train()  # batch statistics: fresh eval BN collapses
    views = two_views(batch, seed=0, epoch=0)
    with torch.no_grad():
        z = simclr.model(torch.cat([views.view1, views.view2]))
        terms = nt_xent_pair_terms(z[:4], z[4:], 0.1)
        c = (lung_share(views.organs1) + lung_share(views.organs2)) / 2
        expected = (terms * (1 + 0.3 * c)).mean()
        assert simclr.batch_loss(simclr.model, batch, 0)[0].item() == pytest.approx(
            terms.mean().item(), rel=1e-5)
        assert masked.batch_loss(masked.model, batch, 0)[0].item() == pytest.approx(
            expected.item(), rel=1e-5)
    assert (c > 0.05).all()  # the phantoms' lungs are seen: the weights are not all 1


def test_method_params_are_checked_and_seg_crop_needs_its_crop():
    with pytest.raises(ValueError, match="unknown"):
        create_method("simclr").build({**_config("simclr"), "method_params": {"tau": 0.2}},
                                      torch.device("cpu"), None)
    with pytest.raises(ValueError, match="seg_crop pretrains on lung-cropped images"):
        create_method("seg_crop").build({**_config("seg_crop"), "crop": None},
                                        torch.device("cpu"), None)
    assert create_method("seg_crop").crops_inputs
    assert not any(create_method(n).crops_inputs for n in CONTRASTIVE if n != "seg_crop")
    with pytest.raises(ValueError, match="model.params.regions=6"):
        create_method("multi_region").build({**_config("simclr"), "method": "multi_region"},
                                            torch.device("cpu"), None)


def test_temperature_reaches_the_loss():
    batch = _batch(4)
    torch.manual_seed(0)
    cold = create_method("simclr").build(_config("simclr"), torch.device("cpu"), None)
    warm = create_method("simclr").build(
        {**_config("simclr"), "method_params": {"temperature": 1.0}}, torch.device("cpu"), None)
    warm.model.load_state_dict(cold.model.state_dict())
    cold.model.train(), warm.model.train()
    with torch.no_grad():
        a = cold.batch_loss(cold.model, batch, 0)[0].item()
        b = warm.batch_loss(warm.model, batch, 0)[0].item()
    assert a != pytest.approx(b, rel=1e-3)
    assert np.isfinite([a, b]).all()

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from medmask.masking import anatomy_region, non_anatomical_mask


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ratio=st.floats(0.0, 0.6), size=st.integers(8, 40))
def test_never_overlaps_anatomy_and_reports_true_ratio(seed, ratio, size):
    g = torch.Generator().manual_seed(seed)
    anatomy = torch.rand(3, size, size + 3, generator=g) < torch.rand(3, 1, 1, generator=g)
    mask, achieved = non_anatomical_mask(anatomy, ratio, g, max_tries=256)
    assert not (mask & anatomy).any()
    assert torch.equal(achieved, mask.sum((1, 2), dtype=torch.float64) / mask[0].numel())
    assert (mask.sum((1, 2)) <= int(np.floor(ratio * mask[0].numel() + 1e-9))).all()


def test_reaches_target_exactly_when_there_is_room():
    anatomy = torch.zeros(4, 64, 64, dtype=torch.bool)
    anatomy[:, 16:48, 20:44] = True  # the anatomy covers 19% of the image
    mask, achieved = non_anatomical_mask(anatomy, 0.3, torch.Generator().manual_seed(0))
    assert mask.sum((1, 2)).tolist() == [1228] * 4  # floor(0.3 * 4096), never overshot
    assert achieved.tolist() == [1228 / 4096] * 4 and not (mask & anatomy).any()
    a2, _ = non_anatomical_mask(anatomy, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(mask, a2)  # seeded


def test_reports_lower_ratio_when_anatomy_leaves_no_room():
    anatomy = torch.ones(2, 32, 32, dtype=torch.bool)
    anatomy[0, :4, :] = False  # image 0: 128 free pixels (12.5%); image 1: none
    mask, achieved = non_anatomical_mask(anatomy, 0.4, torch.Generator().manual_seed(1),
                                         max_tries=512)
    assert not (mask & anatomy).any()
    assert achieved[1].item() == 0.0
    assert 0.0 < achieved[0].item() <= 0.125


def test_anatomy_region_sources_and_threshold():
    organs = np.zeros((1, 6, 6), np.uint8)
    organs[0, 0, 0], organs[0, 1, 1], organs[0, 2, 2] = 1, 3, 2
    assert anatomy_region(organs=organs).sum() == 3
    assert anatomy_region(organs=organs, labels=(3,)).sum() == 1
    heat = np.full((1, 6, 6), 0.01, np.float32)  # blurred: > 0 everywhere
    heat[0, 5, 5] = 1.0
    assert anatomy_region(heatmap=heat, threshold=0.5).sum() == 1  # not `> 0`
    assert anatomy_region(organs=organs, heatmap=heat, threshold=0.5).sum() == 4
    with pytest.raises(ValueError, match="threshold"):
        anatomy_region(heatmap=heat, threshold=0.0)
    with pytest.raises(ValueError):
        anatomy_region()


def _layout(kind: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A random anatomy [3, h, w]: blobs (ellipses and boxes), pixel noise, stripes or a grid."""
    if kind == 0:
        yy, xx = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        region = torch.zeros(3, h, w, dtype=torch.bool)
        for _ in range(int(torch.randint(1, 6, (1,), generator=g))):
            cy, cx = torch.rand(3, 1, 1, generator=g) * h, torch.rand(3, 1, 1, generator=g) * w
            ry = (0.05 + 0.4 * torch.rand(3, 1, 1, generator=g)) * h
            rx = (0.05 + 0.4 * torch.rand(3, 1, 1, generator=g)) * w
            region |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            region |= ((yy - cy).abs() < ry / 2) & ((xx - cx - rx).abs() < rx / 3)
        return region
    if kind == 1:
        return torch.rand(3, h, w, generator=g) < 0.6 * torch.rand(3, 1, 1, generator=g)
    period = int(torch.randint(2, 7, (1,), generator=g))
    cols = (torch.arange(w) % period == 0)[None, :]
    rows = (torch.arange(h) % period == 0)[:, None] if kind == 3 else torch.zeros(h, 1, dtype=bool)
    return (cols | rows)[None].expand(3, h, w).clone()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.integers(0, 3), ratio=st.floats(0.01, 0.5),
       h=st.integers(8, 64), w=st.integers(8, 64))
@example(seed=2, kind=1, ratio=0.25, h=64, w=64)  # pixel noise: fell short (0.21 of target)
@example(seed=3, kind=3, ratio=0.2, h=48, w=48)  # a 2-px grid: fell short (0.47)
def test_reaches_most_of_the_target_wherever_the_free_area_is_twice_it(seed, kind, ratio, h, w):
    g = torch.Generator().manual_seed(seed)
    anatomy = _layout(kind, h, w, g)
    mask, achieved = non_anatomical_mask(anatomy, ratio, g)
    target = int(np.floor(ratio * h * w + 1e-9))
    free = (~anatomy).sum((1, 2))
    assert not (mask & anatomy).any()
    assert (mask.sum((1, 2)) <= target).all()
    roomy = free >= 2 * target
    assert (mask.sum((1, 2))[roomy] >= 0.9 * target).all(), (
        f"achieved {mask.sum((1, 2)).tolist()} of {target} with free {free.tolist()}")


def test_reaches_most_of_the_target_on_phantom_anatomy():
    from medmask.data.phantom import generate

    rows = generate(8, 64, seed=2)
    anatomy = anatomy_region(organs=rows["organs"])
    free = (~anatomy).sum((1, 2))
    for ratio in (0.1, 0.2):
        mask, _ = non_anatomical_mask(anatomy, ratio, torch.Generator().manual_seed(0))
        target = int(np.floor(ratio * 64 * 64 + 1e-9))
        assert (free >= 2 * target).all()
        assert (mask.sum((1, 2)) >= 0.9 * target).all() and not (mask & anatomy).any()

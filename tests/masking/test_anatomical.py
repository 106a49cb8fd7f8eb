import numpy as np
import pytest
import torch

from medmask.masking import anatomical_mask


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.3, 0.4])
def test_exact_area_and_top_pixels_without_ties(ratio):
    heat = torch.rand(3, 2, 64, 48, generator=torch.Generator().manual_seed(0))
    mask, achieved = anatomical_mask(heat, ratio)
    k = int(np.floor(ratio * 64 * 48 + 1e-9))  # floor(r * H * W) pixels exactly
    assert mask.shape == (3, 64, 48) and mask.sum((1, 2)).tolist() == [k] * 3
    assert achieved.tolist() == [k / (64 * 48)] * 3
    combined = heat.sum(1).flatten(1)
    expected = torch.zeros_like(combined, dtype=torch.bool)
    expected.scatter_(1, combined.topk(k, 1).indices, True)
    assert torch.equal(mask.flatten(1), expected)  # the k most activated pixels


def test_ties_exact_takes_only_as_needed_include_takes_level():
    heat = torch.zeros(1, 10, 10)
    heat[0, 0, :5] = 2.0  # 5 pixels above
    heat[0, 1:3, :] = 1.0  # tie level of 20 pixels at the threshold
    mask, achieved = anatomical_mask(heat, 0.1)  # k = 10: 5 above + 5 of the ties
    assert mask.sum() == 10 and achieved.item() == 0.1
    assert mask[0, 0, :5].all() and mask[0, 1:3].sum() == 5 and not mask[0, 3:].any()
    mask_inc, achieved_inc = anatomical_mask(heat, 0.1, ties="include")
    assert mask_inc.sum() == 25 and achieved_inc.item() == 0.25


def test_ties_on_a_saturated_heatmap_are_broken_in_a_seeded_random_order():
    heat = torch.ones(2, 64, 64)  # saturated: every pixel ties at the maximum
    heat[:, 40:, :] = 0.5
    # k = floor(0.25 * 4096) = 1024 of the 2560 tied pixels in rows 0-39.
    mask, achieved = anatomical_mask(heat, 0.25, generator=torch.Generator().manual_seed(3))
    assert mask.sum((1, 2)).tolist() == [1024, 1024] and achieved.tolist() == [0.25, 0.25]
    assert not mask[:, 40:].any()  # never a colder pixel while hot ones are left
    rows = mask.nonzero()[:, 1].double()
    # Raster order would take rows 0-15 (mean row 7.5); a uniform draw over rows 0-39 has
    # mean row 19.5 (standard error ~0.36 for 2048 pixels).
    assert abs(rows.mean().item() - 19.5) < 1.5
    top, bottom = mask[:, :20].sum().item(), mask[:, 20:40].sum().item()
    assert abs(top - bottom) < 0.1 * (top + bottom)
    assert not torch.equal(mask[0], mask[1])  # each image gets its own order
    again, _ = anatomical_mask(heat, 0.25, generator=torch.Generator().manual_seed(3))
    other, _ = anatomical_mask(heat, 0.25, generator=torch.Generator().manual_seed(4))
    assert torch.equal(mask, again) and not torch.equal(mask, other)
    default, _ = anatomical_mask(heat, 0.25)  # no generator: seeded with 0, reproducible
    assert torch.equal(default, anatomical_mask(heat, 0.25)[0])


def test_per_image_ratios_mask_each_image_its_own_top_pixels():
    heat = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(1))
    mask, achieved = anatomical_mask(heat, torch.tensor([0.0, 0.1, 0.3]))
    assert mask.sum((1, 2)).tolist() == [0, 40, 120]
    assert achieved.tolist() == [0.0, 0.1, 0.3]
    for b, k in ((1, 40), (2, 120)):
        top = heat[b].flatten().topk(k).indices
        assert mask[b].flatten()[top].all()
    with pytest.raises(ValueError, match=r"one per image \(3\)"):
        anatomical_mask(heat, [0.1, 0.2])
    with pytest.raises(ValueError, match="got 1.5"):
        anatomical_mask(heat, [0.1, 0.2, 1.5])


def test_resize_and_single_heatmap_layout():
    heat = torch.zeros(2, 8, 8)
    heat[:, :4, :4] = 1.0 + torch.rand(2, 4, 4)  # top-left quarter is hot
    mask, achieved = anatomical_mask(heat, 0.2, size=(32, 32))
    assert mask.shape == (2, 32, 32) and mask.sum((1, 2)).tolist() == [204, 204]
    assert not mask[:, 20:, :].any() and not mask[:, :, 20:].any()


def test_nan_names_the_image():
    heat = np.random.rand(4, 16, 16).astype(np.float32)
    heat[2, 3, 3] = np.nan
    with pytest.raises(ValueError, match="image 2"):
        anatomical_mask(heat, 0.3)
    with pytest.raises(ValueError, match="ratio"):
        anatomical_mask(heat[:1], 1.2)

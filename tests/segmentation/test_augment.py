import numpy as np
import pytest
import torch

from medmask import columns as C
from medmask.segmentation import (
    AugmentConfig,
    AugmentParams,
    context_augment,
    sample_augment_params,
    swap_lungs,
)


def _params(angle=0.0, flip=False, brightness=1.0, contrast=1.0, noise=False, b=1):
    full = lambda v, dtype=torch.float64: torch.full((b,), v, dtype=dtype)  # noqa: E731
    return AugmentParams(full(angle), full(flip, torch.bool), full(brightness),
                         full(contrast), full(noise, torch.bool))


def _organs(size: int = 32) -> torch.Tensor:
    organs = torch.zeros(1, size, size, dtype=torch.uint8)
    organs[0, 8:24, 3:12] = C.ORGAN_RIGHT_LUNG
    organs[0, 8:24, 18:29] = C.ORGAN_LEFT_LUNG
    organs[0, 12:20, 13:17] = C.ORGAN_HEART
    return organs


def test_zero_rotation_without_flip_is_the_identity():
    images = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    organs = _organs()
    out = context_augment(images, organs, [organs > 0], params=_params())
    assert torch.allclose(out.images, images, atol=1e-4)
    assert torch.equal(out.organs, organs) and torch.equal(out.masks[0], organs > 0)
    # the same through the generator path with every range switched off
    off = AugmentConfig(max_rotation_deg=0, flip_p=0, brightness=0, contrast=0, noise_p=0)
    out = context_augment(images, organs, config=off, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out.images, images, atol=1e-4) and torch.equal(out.organs, organs)


def test_flip_mirrors_and_swaps_lung_labels():
    images = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    organs = _organs()
    out = context_augment(images, organs, [organs], params=_params(flip=True))
    assert torch.allclose(out.images, images.flip(-1), atol=1e-4)
    mirrored = organs.flip(-1)
    expected = mirrored.clone()
    expected[mirrored == C.ORGAN_RIGHT_LUNG] = C.ORGAN_LEFT_LUNG
    expected[mirrored == C.ORGAN_LEFT_LUNG] = C.ORGAN_RIGHT_LUNG
    assert torch.equal(out.organs, expected)
    assert torch.equal(out.masks[0], mirrored)  # other masks: geometry only, no swap
    # after the flip the image-left lung is labelled 1 again
    assert (out.organs[0, :, :16] == C.ORGAN_LEFT_LUNG).sum() == 0
    assert torch.equal(swap_lungs(organs, torch.tensor([False])), organs)


def test_rotation_90_is_rot90_counter_clockwise_and_masks_stay_labels():
    organs = _organs()
    out = context_augment(organs.float() / 3, organs, params=_params(angle=90.0))
    assert torch.equal(out.organs, torch.rot90(organs, 1, dims=(1, 2)))
    small = context_augment(organs.float() / 3, organs, params=_params(angle=7.0))
    assert set(small.organs.unique().tolist()) <= {0, 1, 2, 3}


def test_brightness_and_contrast_exact_without_noise():
    images = torch.full((2, 8, 8), 0.4)
    images[:, :4] = 0.6  # mean 0.5
    params = AugmentParams(torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.bool),
                           torch.tensor([1.2, 0.8], dtype=torch.float64),
                           torch.tensor([0.8, 1.2], dtype=torch.float64),
                           torch.zeros(2, dtype=torch.bool))
    out = context_augment(images, params=params).images
    for i, (b, c) in enumerate([(1.2, 0.8), (0.8, 1.2)]):
        mean = 0.5 * b
        expected = (images[i] * b - mean) * c + mean
        assert torch.allclose(out[i], expected, atol=1e-5)
    assert out[0, 0, 0].item() == pytest.approx((0.72 - 0.6) * 0.8 + 0.6, abs=1e-5)


def test_sampled_parameters_ranges_rates_and_seed():
    g = torch.Generator().manual_seed(0)
    p = sample_augment_params(4000, generator=g)
    assert p.angle_deg.abs().max() <= 10 and p.angle_deg.abs().max() > 9.9
    assert ((p.brightness >= 0.8) & (p.brightness <= 1.2)).all()
    assert ((p.contrast >= 0.8) & (p.contrast <= 1.2)).all()
    assert abs(p.flip.float().mean().item() - 0.5) < 0.03
    assert abs(p.noise.float().mean().item() - 0.6) < 0.03
    images = torch.full((6, 16, 16), 0.5)
    a = context_augment(images, generator=torch.Generator().manual_seed(3))
    b = context_augment(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images)


def test_noise_sigma_applied_only_where_drawn():
    images = torch.full((2, 64, 64), 0.5)
    params = AugmentParams(torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.bool),
                           torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                           torch.tensor([True, False]))
    out = context_augment(images, params=params, generator=torch.Generator().manual_seed(0))
    assert (out.images[0] - 0.5).std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.allclose(out.images[1], images[1], atol=1e-5)


def test_numpy_input_and_bad_mask_shape():
    out = context_augment(np.zeros((2, 8, 8), np.float32), generator=torch.Generator())
    assert out.images.shape == (2, 8, 8) and out.organs is None
    with pytest.raises(ValueError, match="mask shape"):
        context_augment(np.zeros((2, 8, 8), np.float32), np.zeros((2, 8, 9), np.uint8))
    with pytest.raises(ValueError, match="flip_p"):
        AugmentConfig(flip_p=1.5)

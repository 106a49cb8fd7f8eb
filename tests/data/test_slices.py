import numpy as np
import pytest

from medmask.data.slices import is_target, minmax_unit, normalize_images, zscore_unit


def test_zscore_unit_maps_mean_to_half_and_clips_at_c_std():
    rng = np.random.default_rng(0)
    images = rng.normal([[[5.0]], [[-50.0]]], [[[2.0]], [[30.0]]], (2, 32, 32))
    out = zscore_unit(images, clip=3.0)
    assert out.dtype == np.float32 and out.shape == (2, 32, 32)
    np.testing.assert_allclose(out.mean((1, 2)), 0.5, atol=0.01)
    z = (images - images.mean((1, 2), keepdims=True)) / images.std((1, 2), keepdims=True)
    np.testing.assert_allclose(out, (np.clip(z, -3, 3) + 3) / 6, atol=1e-5)
    # scale and shift invariant: a z-score per image
    np.testing.assert_allclose(zscore_unit(images * 7 + 3), out, atol=1e-5)
    assert (zscore_unit(np.full((1, 4, 4), 9.0)) == 0.5).all()  # constant image
    wide = zscore_unit(images, clip=1.0)
    assert wide.min() == 0 and wide.max() == 1


def test_minmax_and_unknown_normalization():
    images = np.stack([np.arange(16.0).reshape(4, 4), np.full((4, 4), 3.0)])
    out = minmax_unit(images)
    assert out[0].min() == 0 and out[0].max() == 1 and (out[1] == 0).all()
    np.testing.assert_array_equal(normalize_images(images, "minmax"), out)
    with pytest.raises(ValueError, match="normalize must be one of"):
        normalize_images(images, "percentile")
    with pytest.raises(ValueError, match="zscore_clip"):
        normalize_images(images, "zscore", 0)


def test_target_labels():
    labels = np.array([0, 1, 2, 3, 255])
    assert is_target(labels, None).tolist() == [False, True, True, True, True]
    assert is_target(labels, [2, 3]).tolist() == [False, False, True, True, False]

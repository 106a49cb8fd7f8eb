"""Paired bootstrap intervals and the zero-representation baselines (exact numbers)."""

import numpy as np
import pytest
import torch

from medmask.eval import (
    inpainting_loss,
    logistic_accuracy,
    paired_bootstrap,
    patch_means,
    shortcut_baseline,
    visible_mean_loss,
)


def test_paired_difference_is_the_seed_average_with_per_seed_values():
    a = [np.array([1, 1, 0, 0]), np.array([1, 1, 1, 0, 0])]
    b = [np.array([0, 1, 0, 0]), np.array([0, 0, 1, 0, 0])]
    result = paired_bootstrap(a, b, resamples=500)
    assert result.per_seed == pytest.approx((0.25, 0.4))
    assert result.difference == pytest.approx(0.325)
    assert result.low <= result.difference <= result.high


def test_bootstrap_matches_a_reference_loop_with_the_same_draws():
    rng = np.random.default_rng(3)
    a = [rng.integers(0, 2, 50).astype(float) for _ in range(3)]
    b = [rng.integers(0, 2, 50).astype(float) for _ in range(3)]
    result = paired_bootstrap(a, b, resamples=300, seed=7)
    draws = np.random.default_rng(7)
    idx = [draws.integers(0, 50, size=(300, 50)) for _ in range(3)]
    stats = [np.mean([a[s][idx[s][r]].mean() - b[s][idx[s][r]].mean() for s in range(3)])
             for r in range(300)]
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(stats, [2.5, 97.5])))


def test_identical_arms_give_a_zero_interval_and_a_clear_win_excludes_zero():
    same = [np.array([1.0, 0.0, 1.0, 1.0])]
    tie = paired_bootstrap(same, same)
    assert (tie.difference, tie.low, tie.high) == (0.0, 0.0, 0.0)
    assert not tie.excludes_zero()
    win = paired_bootstrap([np.ones(200)], [np.r_[np.ones(100), np.zeros(100)]])
    assert win.difference == pytest.approx(0.5) and win.low > 0.4 and win.excludes_zero()


def test_arms_that_do_not_pair_up_are_rejected():
    with pytest.raises(ValueError, match="same non-zero number of seeds"):
        paired_bootstrap([np.ones(3)], [np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match="seed 0"):
        paired_bootstrap([np.ones(3)], [np.ones(4)])


def test_visible_mean_and_inpainting_losses_exact():
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, :, 2:] = 1.0  # left half 0, right half 1
    hidden = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    hidden[0, 0, 0, 3] = True  # one masked pixel (value 1); visible mean = 7 / 15
    assert float(visible_mean_loss(images, hidden)[0]) == pytest.approx((1 - 7 / 15) ** 2)
    flat = torch.full((2, 1, 8, 8), 0.3)
    holes = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.allclose(inpainting_loss(flat, holes, sigma=2.0), torch.zeros(2), atol=1e-12)
    # a smooth ramp: a hole near the bright edge is inpainted far better than by the mean
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)[None, None]
    stripe = torch.zeros_like(ramp, dtype=torch.bool)
    stripe[..., 12:15] = True
    assert float(inpainting_loss(ramp, stripe, 2.0)[0]) < 0.2 * float(
        visible_mean_loss(ramp, stripe)[0])


def test_shortcut_baseline_finds_a_linear_class_and_not_a_texture_one():
    rng = np.random.default_rng(0)
    n = 200
    labels = rng.integers(0, 2, n)
    images = rng.normal(0.5, 0.05, (n, 16, 16))
    images[labels == 1, :8, :8] += 0.2  # "where and how much extra density": linear
    probs = shortcut_baseline(images[:150], labels[:150], images[150:], classes=2, grid=4)
    assert probs.shape == (50, 2) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1) == labels[150:]).mean() > 0.95
    texture = rng.normal(0.5, 0.05, (n, 16, 16))
    checker = np.indices((16, 16)).sum(0) % 2 * 0.2 - 0.1
    texture[labels == 1] += checker  # same patch means in both classes
    acc = logistic_accuracy(patch_means(texture[:150], 4), labels[:150],
                            patch_means(texture[150:], 4), labels[150:])
    assert acc < 0.7
    with pytest.raises(ValueError, match="does not divide"):
        shortcut_baseline(images, labels, images, classes=2, grid=5)

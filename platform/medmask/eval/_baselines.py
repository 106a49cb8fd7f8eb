"""Zero-representation baselines: the shortcut classifier and the inpainting floors of MIM.

- :func:`shortcut_baseline`: a multinomial logistic regression on the grid of patch means
  (16 x 16 by default: 4 x 4-px patches at 64 px). It needs no representation: when it scores
  near a fine-tuned ViT, the benchmark cannot tell masking strategies apart (a class that is
  "where and how much extra density" is linearly separable in these features).
- :func:`visible_mean_loss`, :func:`inpainting_loss`: the masked-pixel squared error of two
  zero-parameter predictions on the same masks: the mean of each image's visible pixels, and
  Gaussian normalized-convolution inpainting (``blur(x v) / blur(v)``, v the visible pixels).
  A pretraining run whose reconstruction loss does not beat inpainting has learned to
  interpolate, nothing more.

- :func:`multilabel_logistic_probabilities`: one binary logistic regression per label, all
  labels fitted in one L-BFGS run (the losses are separable), at a fixed L2 weight: the
  per-epoch linear probe of pretraining (the same probe for every method).

The multinomial logistic regression standardizes the features on the training set, picks the
L2 weight from a small grid on a held-out last fifth of the training images, refits on all of
them (L-BFGS, full batch, float64, deterministic) and returns test probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
SHORTCUT_GRID = 16  # patch means on a 16 x 16 grid


def patch_means(images: np.ndarray, patch: int) -> np.ndarray:
    """[n, (H / patch) * (W / patch)]: each patch's mean pixel value (the shortcut features)."""
    n, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patch {patch} does not divide the image size {h}x{w}")
    blocks = np.asarray(images, np.float64).reshape(n, h // patch, patch, w // patch, patch)
    return blocks.mean(axis=(2, 4)).reshape(n, -1)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, classes: int) -> torch.Tensor:
    weights = torch.zeros(x.shape[1] + 1, classes, dtype=torch.float64, requires_grad=True)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=300, tolerance_grad=1e-7,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(design @ weights, y) + l2 * weights[:-1].square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


def _logits(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1) @ weights


def logistic_probabilities(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                           classes: int, l2_grid: tuple[float, ...] = L2_GRID) -> np.ndarray:
    """Test probabilities [n_test, classes] of the multinomial logistic regression (module
    docstring); ``classes`` fixes the output width even when a class is absent."""
    if len(train_x) < 5:
        raise ValueError(f"the logistic baseline needs >= 5 training rows, got {len(train_x)}")
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    xs = torch.from_numpy((train_x - mean) / std).double()
    xt = torch.from_numpy((test_x - mean) / std).double()
    ys = torch.as_tensor(np.array(train_y, dtype=np.int64))  # a copy: Ray hands read-only arrays
    cut = len(xs) * 4 // 5
    scores = []
    for l2 in l2_grid:
        weights = _fit_logistic(xs[:cut], ys[:cut], l2, classes)
        scores.append(float((_logits(weights, xs[cut:]).argmax(1) == ys[cut:]).double().mean()))
    best = l2_grid[int(np.argmax(scores))]
    weights = _fit_logistic(xs, ys, best, classes)
    return torch.softmax(_logits(weights, xt), dim=1).numpy()


def multilabel_logistic_probabilities(train_x: np.ndarray, train_y: np.ndarray,
                                      test_x: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Test probabilities [n_test, K] of K independent binary logistic regressions on
    standardized features (train labels [n, K] multi-hot): the mean binary cross-entropy plus
    ``l2 x ||w||^2`` per label, minimized jointly by L-BFGS in float64 (deterministic)."""
    labels = np.asarray(train_y, np.float64)
    if labels.ndim != 2 or len(labels) != len(train_x):
        raise ValueError(f"multi-label targets must be [n, K] with n = {len(train_x)}, got "
                         f"{labels.shape}")
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    xs = torch.from_numpy((train_x - mean) / std).double()
    xt = torch.from_numpy((test_x - mean) / std).double()
    ys = torch.from_numpy(labels)
    weights = torch.zeros(xs.shape[1] + 1, ys.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=300, tolerance_grad=1e-7,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(_logits(weights, xs), ys, reduction="none")
                .mean(0).sum() + l2 * weights[:-1].square().sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.sigmoid(_logits(weights.detach(), xt)).numpy()


def logistic_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                      test_y: np.ndarray, l2_grid: tuple[float, ...] = L2_GRID) -> float:
    """Test accuracy of :func:`logistic_probabilities`."""
    classes = int(max(np.max(train_y), np.max(test_y))) + 1
    probs = logistic_probabilities(train_x, train_y, test_x, classes, l2_grid)
    return float((probs.argmax(1) == np.asarray(test_y)).mean())


def shortcut_baseline(train_images: np.ndarray, train_labels: np.ndarray,
                      test_images: np.ndarray, classes: int,
                      grid: int = SHORTCUT_GRID) -> np.ndarray:
    """Test probabilities of the shortcut baseline: logistic regression on the ``grid`` x
    ``grid`` patch means of [n, H, W] images (patch = H / grid)."""
    side = int(np.asarray(train_images).shape[-1])
    if side % grid:
        raise ValueError(f"the shortcut grid {grid} does not divide the image side {side}")
    patch = side // grid
    return logistic_probabilities(patch_means(train_images, patch), train_labels,
                                  patch_means(test_images, patch), classes)


def visible_mean_loss(images: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Per-image masked-pixel MSE [B] of predicting each image's visible-pixel mean.

    ``images`` [B, 1, H, W]; ``hidden`` bool [B, 1, H, W], True on masked pixels.
    """
    visible = (~hidden).to(images.dtype)
    mean = (images * visible).sum((1, 2, 3)) / visible.sum((1, 2, 3)).clamp_min(1)
    return _masked_mse(images, mean[:, None, None, None].expand_as(images), hidden)


def inpainting_loss(images: torch.Tensor, hidden: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-image masked-pixel MSE [B] of Gaussian normalized-convolution inpainting:
    ``blur(x v) / blur(v)`` with a Gaussian of ``sigma`` px (v = visible pixels), the visible
    mean where no visible pixel lies within reach."""
    visible = (~hidden).to(images.dtype)
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets.square() / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, radius, radius)), kernel.view(1, 1, -1, 1))

    weight = blur(visible)
    mean = (images * visible).sum((1, 2, 3)) / visible.sum((1, 2, 3)).clamp_min(1)
    filled = torch.where(weight > 1e-6, blur(images * visible) / weight.clamp_min(1e-6),
                         mean[:, None, None, None].expand_as(images))
    return _masked_mse(images, filled, hidden)


def _masked_mse(images: torch.Tensor, prediction: torch.Tensor,
                hidden: torch.Tensor) -> torch.Tensor:
    weight = hidden.to(images.dtype)
    return ((prediction - images).square() * weight).sum((1, 2, 3)) / weight.sum(
        (1, 2, 3)).clamp_min(1)

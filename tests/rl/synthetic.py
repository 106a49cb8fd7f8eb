"""A synthetic AHM task whose hard patches are known and move from image to image.

Each image is flat grey with one textured square (``square`` x ``square`` patches, fresh noise
every image) at a random patch-aligned place. The frozen "reconstruction" is a fixed
smoothing function: every masked patch is filled with the mean of the image's visible pixels.
Flat patches then reconstruct almost perfectly and textured ones do not, so the hard patches
are exactly the square's, and only a policy that looks at the image can find them: where the
square goes is uniform, so no position prior (the position oracle) can.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medmask.masking import PatchGrid, apply_patch_mask
from medmask.models import ReconstructionOutput

SIZE, PATCH, SQUARE = 32, 4, 2  # 8 x 8 = 64 patches, a 2 x 2-patch square (4 hard patches)


def moving_square_images(count: int, seed: int, size: int = SIZE, patch: int = PATCH,
                         square: int = SQUARE) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [M, H, W], hard bool [M, N]): the square's patches are the hard ones."""
    rng = np.random.default_rng(seed)
    cells = size // patch
    images = np.full((count, size, size), 0.5, np.float32)
    hard = np.zeros((count, cells, cells), bool)
    rows = rng.integers(0, cells - square + 1, count)
    cols = rng.integers(0, cells - square + 1, count)
    side = square * patch
    for m, (r, c) in enumerate(zip(rows, cols, strict=True)):
        texture = rng.uniform(0.0, 1.0, (side, side)).astype(np.float32)
        images[m, r * patch:r * patch + side, c * patch:c * patch + side] = texture
        hard[m, r:r + square, c:c + square] = True
    return images, hard.reshape(count, -1)


class SmoothingReconstruction(nn.Module):
    """Masked patches -> the mean of the visible pixels; per-patch MSE (the model interface)."""

    def __init__(self, size: int = SIZE, patch: int = PATCH) -> None:
        super().__init__()
        self.grid = PatchGrid(size, size, patch_size=patch)
        self.register_buffer("_unused", torch.zeros(()))  # a module with a device

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> ReconstructionOutput:
        visible = 1.0 - self.grid.unpool(mask.float())[:, None]  # [B, 1, H, W]
        fill = (images * visible).sum(dim=(1, 2, 3)) / visible.sum(dim=(1, 2, 3)).clamp(min=1)
        masked = apply_patch_mask(images, self.grid, mask)
        prediction = masked + (1.0 - visible) * fill[:, None, None, None]
        squared = (prediction - images).pow(2).mean(dim=1)
        return ReconstructionOutput(prediction, self.grid.pool(squared, reduce="mean"))


def reward_fn(model: SmoothingReconstruction):  # noqa: ANN201
    """(images, masks) -> per-patch losses [B, N], as the environment computes them."""
    return lambda images, masks: model(images, masks).patch_loss


def hard_hit_rate(masks: torch.Tensor, hard: np.ndarray) -> float:
    """Share of the hard patches that the masks [M, N] mask."""
    hard_t = torch.as_tensor(hard)
    return float((masks.bool() & hard_t).sum() / hard_t.sum())


def position_oracle_masks(train_hard: np.ndarray, count: int, test_count: int) -> torch.Tensor:
    """Every image masks the ``count`` positions most often hard on the training images."""
    rate = torch.as_tensor(train_hard.mean(axis=0))
    top = torch.topk(rate, count).indices
    mask = torch.zeros(rate.shape[0], dtype=torch.bool)
    mask[top] = True
    return mask.expand(test_count, -1)

"""Region-guided masking (RGMIM): mask only patches that overlap the organ mask.

Source: Li et al., "RGMIM: Region-Guided Masked Image Modeling", section 3 (region-guided
masking strategy): a patch is *valid* when it overlaps the lung mask, and ``m = floor(N * sigma)``
valid patches are masked at random. The paper is silent on ``m`` exceeding the valid count,
which is the usual case at sigma = 0.75 (lungs cover about half the patches): then every valid
patch is masked and the rest are filled at random from the other patches, so every row keeps
the same count (what lets a batch stack). :class:`RegionGuidedStats` reports how often.

Two readings of the count. (a) ``m = floor(N sigma)`` with N *all* patches, as implemented:
at sigma = 0.75 and a valid fraction under 0.75 the rule masks every lung patch of every
image in every epoch (the encoder never sees a lung token) and fills the rest from outside
the lungs. (b) ``m = floor(N_valid sigma)``, sigma of the *valid* patches: varies per image,
which a fixed-count batch cannot stack, so it is not offered; ``region_priority`` is the
fixed-count interpolation instead. ``region_priority = w`` draws the m masked patches
without replacement with probability proportional to w for valid patches and 1 for the
others (:func:`~medmask.masking.sample_from_scores`'s exponential race): w = 1 is random
masking (the same patches as :func:`~medmask.masking.random_mask` for the same noise),
w = inf (the default) is reading (a), the paper's rule; values between let a sweep move
from one to the other and leave some lung tokens visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from medmask import columns as C
from medmask.masking._grid import PatchGrid
from medmask.masking._noise import uniform_noise
from medmask.masking._patch import mask_lowest
from medmask.masking._validate import as_tensor, num_masked


@dataclass(frozen=True)
class RegionGuidedStats:
    """Per-image statistics of one region-guided batch.

    Attributes:
        valid_fraction: [B] share of the N patches that overlap the region.
        filled_share: [B] share of the m masked patches that had to come from outside the
            region because fewer than m patches were valid.
    """

    valid_fraction: torch.Tensor
    filled_share: torch.Tensor


def patch_validity(
    organs: np.ndarray | torch.Tensor,
    grid: PatchGrid,
    valid_labels: tuple[int, ...] = C.LUNG_LABELS,
    min_overlap: float = 0.0,
) -> torch.Tensor:
    """Bool [B, N]: the patch's share of region pixels exceeds ``min_overlap``.

    With the default ``min_overlap = 0`` (any region pixel) and a contiguous label set
    ``lo..hi`` (the lungs 1..2; a boolean map is the set {1}), validity needs no per-pixel
    label test: in uint8 arithmetic, ``(x - lo) mod 256 <= hi - lo`` exactly when x is a
    region label, so a patch is valid when the *minimum* of ``x - lo`` over its pixels is
    ``<= hi - lo``. That is one wrapping subtraction and one min-pool (:meth:`PatchGrid.pool`)
    per pixel, streamed in cache-sized chunks of images: the maps are read once. Other label
    sets and ``min_overlap > 0`` build the region mask and pool its coverage.

    Args:
        organs: [B, H, W] organ label map (uint8) or boolean region mask.
        grid: the patch layout.
        valid_labels: organ labels that make up the region (default: both lungs).
        min_overlap: a patch is valid when its region share is > this (0: any pixel).
    """
    maps = as_tensor(organs, name="organs")
    if maps.ndim != 3:
        raise ValueError(f"organs must be [B, H, W], got shape {tuple(maps.shape)}")
    if not 0.0 <= float(min_overlap) < 1.0:
        raise ValueError(f"min_overlap must be in [0, 1), got {min_overlap!r}")
    labels = sorted({int(v) for v in valid_labels})
    if not labels or labels[0] < 0 or labels[-1] > 255:
        raise ValueError(f"valid_labels must be organ codes in [0, 255], got {valid_labels!r}")
    if maps.dtype == torch.bool:
        maps, labels = maps.view(torch.uint8), [1]
    lo, hi = labels[0], labels[-1]
    if min_overlap == 0.0 and maps.dtype == torch.uint8 and hi - lo + 1 == len(labels):
        return _min_shifted_pool(maps, grid, lo) <= hi - lo
    region = torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    for label in labels:
        region |= maps == label
    if min_overlap == 0.0:
        return grid.pool(region, reduce="any")
    return grid.pool(region, reduce="mean") > float(min_overlap)


_CHUNK_PIXELS = 1 << 20  # ~1 MiB of uint8 per chunk: the shifted copy stays in cache


def _min_shifted_pool(maps: torch.Tensor, grid: PatchGrid, lo: int) -> torch.Tensor:
    """uint8 [B, N]: per-patch minimum of ``(maps - lo) mod 256`` (uint8 [B, H, W] maps)."""
    if lo == 0:
        return grid.pool(maps, reduce="min")
    if maps.device.type != "cpu":
        return grid.pool(maps - lo, reduce="min")  # uint8 arithmetic wraps modulo 256
    pixels = maps.numpy()
    batch_size = pixels.shape[0]
    chunk = max(1, _CHUNK_PIXELS // (grid.height * grid.width))
    buffer = np.empty((min(chunk, batch_size), grid.height, grid.width), np.uint8)
    out = np.empty((batch_size, grid.num_patches), np.uint8)
    for start in range(0, batch_size, chunk):
        stop = min(start + chunk, batch_size)
        shifted = np.subtract(pixels[start:stop], np.uint8(lo), out=buffer[: stop - start])
        out[start:stop] = grid.pool(shifted, reduce="min")
    return torch.from_numpy(out)


def region_guided_mask(
    organs: np.ndarray | torch.Tensor,
    grid: PatchGrid,
    ratio: float,
    generator: torch.Generator | None = None,
    *,
    valid_labels: tuple[int, ...] = C.LUNG_LABELS,
    min_overlap: float = 0.0,
    seeds: np.ndarray | torch.Tensor | None = None,
    region_priority: float = math.inf,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, RegionGuidedStats]:
    """Mask m = floor(N * ratio) patches per image, valid (region) patches first (RGMIM).

    With ``region_priority = inf`` (the paper's rule): one argsort over
    ``noise + (not valid)``: valid patches (keys in [0, 1)) come before the others (keys in
    [1, 2)), each group in random order, so the m lowest keys are m random valid patches, or
    all valid ones plus a random fill from the rest. A finite priority w >= 1 draws from the
    exponential race with keys ``-log(1 - u) / w`` on valid and ``-log(1 - u)`` on the other
    patches (module docstring): w = 1 is random masking.

    Returns:
        bool [B, N] (True = masked), and :class:`RegionGuidedStats` when ``return_stats``
        (``filled_share``: the share of the m masked patches that lie outside the region).
    """
    priority = float(region_priority)
    if not priority >= 1.0:
        raise ValueError(f"region_priority must be >= 1 (1 = random masking, inf = the "
                         f"paper's rule), got {region_priority!r}")
    valid = patch_validity(organs, grid, valid_labels, min_overlap)
    batch_size, n = valid.shape
    count = num_masked(n, ratio)
    noise = uniform_noise(batch_size, n, generator=generator, seeds=seeds, device=valid.device)
    if math.isinf(priority):
        keys = noise + (~valid).to(noise.dtype)
    else:
        weights = torch.where(valid, torch.tensor(priority, dtype=noise.dtype),
                              torch.tensor(1.0, dtype=noise.dtype))
        keys = torch.log1p(-noise).neg_().div_(weights)
    mask = mask_lowest(keys, count)
    if not return_stats:
        return mask
    n_valid = valid.sum(1)
    filled = (mask & ~valid).sum(1).float()
    stats = RegionGuidedStats(
        valid_fraction=n_valid.float() / n,
        filled_share=filled / count if count > 0 else torch.zeros_like(filled),
    )
    return mask, stats

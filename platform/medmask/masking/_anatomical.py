"""Anatomical masking for evaluation: mask the top-activated pixels of a gaze heatmap.

Source: Mask Creation Methodology, "Inference: Anatomical-Specific Masking": aggregate and
resize all heatmaps of an image, form a combined heatmap, apply an adaptive threshold that
selects the top-activated pixels so that the masked area matches a target ratio
r in {0.1, 0.2, 0.3, 0.4}. Here the threshold of image b is the k-th largest value of its
combined heatmap with ``k = floor(r * H * W)`` (one ``kthvalue`` per row of the flattened
batch), so the masked area is exactly k pixels.

The ratio may also be one value per image (``[B]``): the matched-area condition of the
grounding protocol masks, on each image, the area that non-anatomical masking achieved there.

Ties: pixels equal to the threshold form one "tie level". ``ties="exact"`` (default) masks
every pixel above the threshold and only as many tied pixels as needed, chosen in a seeded
random order (a random key per pixel from ``generator``, or from a generator seeded with 0
when none is given), so the area is always exactly k and a saturated heatmap (a plateau of
equal maxima) is not masked from the top of the image down; ``ties="include"`` masks the
whole tie level (``heat >= threshold``), so the area may exceed k by that level's size.
Without ties (any continuous heatmap) both give the same exact k pixels. The achieved ratio is
returned either way. One vectorized pass: a stable sort of the random keys, then a stable
descending sort of the heat in that order, ranks every pixel (heat first, ties by key); the
first k_b ranks of row b are masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medmask.masking._validate import as_tensor, num_masked

TIE_MODES = ("exact", "include")


def combined_heatmap(
    heatmaps: np.ndarray | torch.Tensor,
    size: tuple[int, int] | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Sum [B, K, H, W] heatmaps over K (or take [B, H, W] as is) and resize to ``size``.

    Summing before a (linear) resize equals resizing each heatmap and summing. The resize is
    one batched ``F.interpolate``. Raises ValueError naming the first image with a NaN.
    """
    heat = as_tensor(heatmaps, name="heatmaps")
    if heat.ndim == 4:
        heat = heat.sum(1)
    elif heat.ndim != 3:
        raise ValueError(f"heatmaps must be [B, K, H, W] or [B, H, W], got {tuple(heat.shape)}")
    heat = heat if heat.is_floating_point() else heat.float()
    has_nan = torch.isnan(heat).flatten(1).any(1)
    if bool(has_nan.any()):
        index = int(has_nan.nonzero()[0, 0])
        raise ValueError(f"heatmap of image {index} contains NaN (images with NaN: "
                         f"{has_nan.nonzero()[:, 0].tolist()})")
    if size is not None and tuple(heat.shape[-2:]) != tuple(int(v) for v in size):
        kwargs = {} if mode in ("nearest", "area") else {"align_corners": False}
        heat = F.interpolate(heat[:, None], size=tuple(int(v) for v in size), mode=mode,
                             **kwargs)[:, 0]
    return heat


def anatomical_mask(
    heatmaps: np.ndarray | torch.Tensor,
    ratio: float | Sequence[float] | np.ndarray | torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    ties: str = "exact",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask the ``floor(ratio * H * W)`` most activated pixels of each combined heatmap.

    Args:
        heatmaps: [B, K, H, W] (summed over K) or [B, H, W] heatmaps (e.g. EYEGAZE).
        ratio: target masked area r in [0, 1) of the image (the source uses 0.1 .. 0.4), one
            value for the batch or one per image ([B]).
        size: (H, W) of the images when the heatmaps have another size (bilinear resize).
        ties: ``"exact"`` (exactly k pixels; ties at the threshold taken in a seeded random
            order) or ``"include"`` (the whole tie level; may exceed k). See the module
            docstring.
        generator: CPU torch generator for the random tie order (None: seeded with 0).

    Returns:
        (bool pixel mask [B, H, W], True = masked; achieved ratio per image, float64 [B]).

    Raises:
        ValueError: a NaN in a heatmap (naming the image index), a bad ratio (naming it), a
            per-image ratio of the wrong length, or a bad tie mode.
    """
    if ties not in TIE_MODES:
        raise ValueError(f"ties must be one of {TIE_MODES}, got {ties!r}")
    heat = combined_heatmap(heatmaps, size)
    batch_size, height, width = heat.shape
    pixels = height * width
    flat = heat.reshape(batch_size, -1).cpu()
    counts = _counts(ratio, batch_size, pixels)
    order = _rank_order(flat, generator)  # [B, HW]: pixel indices, hottest first
    in_top = torch.arange(pixels)[None, :] < counts[:, None]
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, in_top)
    if ties == "include":
        last = torch.gather(order, 1, (counts - 1).clamp_min(0)[:, None])
        threshold = torch.gather(flat, 1, last)
        mask = (flat >= threshold) & (counts > 0)[:, None]
    achieved = mask.sum(1, dtype=torch.float64) / float(pixels)
    return mask.reshape(batch_size, height, width), achieved


def _counts(ratio: float | Sequence[float] | np.ndarray | torch.Tensor, batch_size: int,
            pixels: int) -> torch.Tensor:
    """floor(r * H * W) per image, int64 [B], from one ratio or one per image."""
    values = np.atleast_1d(np.asarray(ratio.cpu() if isinstance(ratio, torch.Tensor) else ratio,
                                      dtype=np.float64))
    if values.ndim != 1 or len(values) not in (1, batch_size):
        raise ValueError(f"ratio must be one number or one per image ({batch_size}), got "
                         f"shape {values.shape}")
    counts = [num_masked(pixels, float(v)) for v in values]  # checks each: [0, 1)
    out = torch.tensor(counts, dtype=torch.int64)
    return out.expand(batch_size).clone() if len(out) == 1 else out


def _rank_order(flat: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Pixel indices [B, HW] by descending heat, equal heat in a seeded random order."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    keys = torch.rand(flat.shape, generator=generator)
    shuffled = keys.argsort(dim=1, stable=True)
    by_heat = torch.gather(flat, 1, shuffled).argsort(dim=1, descending=True, stable=True)
    return torch.gather(shuffled, 1, by_heat)

"""Non-anatomical masking for evaluation: black rectangles that never touch the anatomy.

Source: Mask Creation Methodology, "Inference: Non-Anatomical Masking": random black
rectangles of varying sizes are sampled repeatedly, overlap with the anatomical regions is
strictly prevented, and sampling continues until the target masked area is reached or a
sampling limit is met. The achieved ratio is returned (it is lower than the target when the
anatomy leaves too little room): never silently less.

Vectorized over the batch; only the sampling rounds loop. Each round draws
``candidates_per_round`` rectangles per image as tensors: sides log-uniform between
``side_range`` fractions of the image size (times a per-image scale, below), each rectangle
placed over an anchor pixel drawn uniformly from the image's pixels that are still free
(neither anatomy nor masked), so candidates land where there is room. A candidate is free when
its box holds no blocked pixel, tested in O(1) with an integral image (summed-area table) of
anatomy | masked; of a round's free candidates, each one that meets no earlier free candidate
of the round and whose running area still fits is accepted. Accepted rectangles are disjoint,
so the masked area is the exact sum of their areas; a candidate larger than the remaining area
is shrunk to ``floor(remaining / w)`` rows (or a 1-row strip of ``remaining`` pixels), so the
target is never overshot and, given room, reached exactly. An image whose round accepted
fewer than a quarter of its candidates halves its side scale (down to 1-pixel rectangles), one
that accepted at least half doubles it back (at most 1): fragmented free space (thin gaps
between structures, scattered pixels) still fills up, which the property test holds to
(achieved >= 0.9 target wherever the free area is at least twice the target). A round works
on the images still short of their target only and paints their accepted rectangles at once,
from a difference array of the rectangles' corners.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medmask.masking._validate import as_tensor, num_masked


def non_anatomical_mask(
    anatomy: np.ndarray | torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
    max_tries: int = 4096,
    *,
    side_range: tuple[float, float] = (0.02, 0.3),
    candidates_per_round: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rectangles outside ``anatomy`` covering ``floor(ratio * H * W)`` pixels.

    Args:
        anatomy: [B, H, W] bool (or 0/1) anatomical region; never masked.
        ratio: target masked area r in [0, 1) of the whole image.
        generator: torch generator (CPU) for reproducible rectangles.
        max_tries: the sampling limit: candidate rectangles drawn per image at most.
        side_range: rectangle sides are drawn log-uniformly between these fractions of the
            image height (for heights) and width (for widths).
        candidates_per_round: candidates drawn per image in one vectorized round.

    Returns:
        (bool pixel mask [B, H, W], True = masked, never True where ``anatomy`` is;
        achieved ratio per image, float64 [B], <= ratio; lower when no room was found).
    """
    region = as_tensor(anatomy, name="anatomy")
    if region.ndim != 3:
        raise ValueError(f"anatomy must be [B, H, W], got shape {tuple(region.shape)}")
    if int(max_tries) < 1 or int(candidates_per_round) < 1:
        raise ValueError(f"max_tries and candidates_per_round must be >= 1, got {max_tries}, "
                         f"{candidates_per_round}")
    lo_frac, hi_frac = (float(v) for v in side_range)
    if not 0.0 < lo_frac <= hi_frac <= 1.0:
        raise ValueError(f"side_range must satisfy 0 < low <= high <= 1, got {side_range!r}")
    region = region.to("cpu", torch.bool)
    batch_size, height, width = region.shape
    target = num_masked(height * width, ratio)
    sampler = _RectangleSampler(height, width, lo_frac, hi_frac, generator)
    remaining = torch.full((batch_size,), target, dtype=torch.int64)
    scale = torch.ones(batch_size, dtype=torch.float64)
    masked = torch.zeros_like(region)
    for _ in range(math.ceil(int(max_tries) / int(candidates_per_round))):
        short = (remaining > 0).nonzero()[:, 0]
        blocked = region[short] | masked[short]
        open_pixels = ~blocked.reshape(len(short), height * width)
        has_room = open_pixels.any(1)
        short, blocked, open_pixels = short[has_room], blocked[has_room], open_pixels[has_room]
        if len(short) == 0:
            break
        cand = sampler.draw(candidates_per_round, remaining[short], scale[short],
                            open_pixels)  # [b, K, 4]
        free = _box_sum(_summed_area_table(blocked), width, cand) == 0
        cand_np, free_np = cand.numpy(), free.numpy()
        # Within a round, keep a free candidate only if it meets no earlier free candidate
        # (conservative, so accepted boxes stay disjoint) and the running area fits.
        free_np &= ~_intersects_earlier(cand_np, free_np)
        area = (cand_np[..., 1] - cand_np[..., 0]) * (cand_np[..., 3] - cand_np[..., 2])
        running = np.cumsum(area * free_np, axis=1)
        free_np &= running <= remaining[short].numpy()[:, None]
        masked[short] |= _paint(np.where(free_np[..., None], cand_np, 0), height, width)
        remaining[short] -= torch.from_numpy((area * free_np).sum(1))
        accepted = torch.from_numpy(free_np.mean(1))  # share of the round's candidates
        scale[short] = torch.where(accepted >= 0.5, (scale[short] * 2).clamp_max(1.0),
                                   torch.where(accepted < 0.25, scale[short] / 2, scale[short]))
    achieved = masked.sum((1, 2), dtype=torch.float64) / float(height * width)
    return masked, achieved


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Broadcast box intersection of (y0, y1, x0, x1) boxes; empty boxes meet nothing."""
    return ((a[..., 0] < b[..., 1]) & (b[..., 0] < a[..., 1])
            & (a[..., 2] < b[..., 3]) & (b[..., 2] < a[..., 3]))


def _intersects_earlier(cand: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Bool [B, K]: candidate k meets a free candidate j < k of the same image."""
    k = cand.shape[1]
    pairs = _overlap(cand[:, :, None], cand[:, None, :]) & free[:, None, :]
    return (pairs & np.tri(k, k, -1, dtype=bool)[None]).any(-1)


class _RectangleSampler:
    """Draws [B, K, 4] candidate boxes (y0, y1, x0, x1) over free anchor pixels, with sides
    scaled per image and shrunk to the remaining area."""

    def __init__(self, height: int, width: int, lo: float, hi: float,
                 generator: torch.Generator | None) -> None:
        self.height, self.width, self.generator = height, width, generator
        self.h_range = _side_bounds(height, lo, hi)
        self.w_range = _side_bounds(width, lo, hi)

    def _sides(self, shape: tuple[int, int], bounds: tuple[int, int],
               scale: torch.Tensor) -> torch.Tensor:
        low = (bounds[0] * scale).clamp_min(1.0)[:, None]  # [B, 1]
        high = (bounds[1] * scale).clamp_min(1.0)[:, None]
        u = torch.rand(shape, generator=self.generator, dtype=torch.float64)
        sides = torch.exp(low.log() + u * ((high + 1).log() - low.log()))
        return torch.minimum(sides.long(), high.long()).clamp_min(1)

    def draw(self, k: int, remaining: torch.Tensor, scale: torch.Tensor,
             open_pixels: torch.Tensor) -> torch.Tensor:
        batch_size = len(remaining)
        h = self._sides((batch_size, k), self.h_range, scale)
        w = self._sides((batch_size, k), self.w_range, scale)
        left = remaining[:, None].clamp_min(1)
        too_big = h * w > left
        rows_that_fit = left // w
        strip = too_big & (rows_that_fit == 0)  # fewer pixels left than one row: a strip
        h = torch.where(too_big, rows_that_fit.clamp_min(1), h)
        w = torch.where(strip, left.expand_as(w), w)
        # Anchors: uniform over each image's open pixels (every image drawn for has one).
        weights = open_pixels.to(torch.float32)
        anchor = torch.multinomial(weights, k, replacement=True, generator=self.generator)
        ay, ax = anchor // self.width, anchor % self.width
        u = torch.rand((2, batch_size, k), generator=self.generator, dtype=torch.float64)
        y0 = torch.minimum((ay - (u[0] * h).long()).clamp_min(0), self.height - h)
        x0 = torch.minimum((ax - (u[1] * w).long()).clamp_min(0), self.width - w)
        return torch.stack([y0, y0 + h, x0, x0 + w], -1)


def _side_bounds(size: int, lo: float, hi: float) -> tuple[int, int]:
    low = max(1, round(lo * size))
    return low, max(low, min(size, round(hi * size)))


def _summed_area_table(region: torch.Tensor) -> torch.Tensor:
    """Flattened int32 [B, (H+1)*(W+1)] table: S[y, x] = pixels of region[:y, :x]."""
    batch_size, height, width = region.shape
    table = torch.zeros(batch_size, height + 1, width + 1, dtype=torch.int32)
    table[:, 1:, 1:] = region.to(torch.int32).cumsum(1).cumsum(2)
    return table.reshape(batch_size, -1)


def _box_sum(table: torch.Tensor, width: int, boxes: torch.Tensor) -> torch.Tensor:
    """Region pixels inside each of [B, K] boxes (y0, y1, x0, x1): four table lookups."""
    y0, y1, x0, x1 = boxes.unbind(-1)

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.gather(table, 1, y * (width + 1) + x)

    return at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)


def _paint(boxes: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Bool [B, H, W] union of [B, R, 4] boxes, from a difference array of their corners."""
    batch_size = boxes.shape[0]
    y0, y1, x0, x1 = (boxes[..., i].reshape(-1) for i in range(4))
    image = np.repeat(np.arange(batch_size), boxes.shape[1])
    diff = np.zeros((batch_size, height + 1, width + 1), np.int32)
    for ys, xs, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        np.add.at(diff, (image, ys, xs), sign)
    return torch.from_numpy(diff.cumsum(1).cumsum(2)[:, :height, :width] > 0)

"""Pixel-space maskers for evaluation, by name: ``anatomical``, ``non_anatomical``,
``contour_overlay``.

Sources: Mask Creation Methodology ("Inference: Anatomical-Specific Masking" and
"Non-Anatomical Masking") and Anatomical Masking as Lightweight Visual Priors (equation 1).
One lookup, like the patch-mask registry: ``create_pixel_masker(name, **params)`` returns
``f(batch, *, generator=None) -> PixelMaskResult``; ``batch`` is a mapping of tensors/arrays
(``image`` [B, H, W] or [B, C, H, W], ``gaze``, ``organs``, ``anatomy``) and every masker
reports what it achieved (the real masked or touched fraction), never silently less.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from medmask import columns as C
from medmask.masking._anatomical import anatomical_mask
from medmask.masking._contour import DEFAULT_STRUCTURES, contour_bands, contour_overlay
from medmask.masking._non_anatomical import non_anatomical_mask
from medmask.masking._region import ANATOMY_LABELS, anatomy_region
from medmask.masking._validate import as_tensor, check_ratio
from medmask.registry import Registry


@dataclass(frozen=True)
class PixelMaskResult:
    """What a pixel masker produced.

    Attributes:
        images: the masked images (masked pixels set to 0; same layout as the input) or, for
            ``contour_overlay``, RGB overlays [B, 3, H, W].
        mask: bool [B, H, W], the pixels that were changed.
        achieved: float64 [B], the achieved masked (or contour-touched) fraction per image.
    """

    images: torch.Tensor
    mask: torch.Tensor
    achieved: torch.Tensor


class PixelMasker(Protocol):
    """A configured pixel masker: ``f(batch, *, generator=None) -> PixelMaskResult``."""

    def __call__(self, batch: Mapping[str, Any], *,
                 generator: torch.Generator | None = None) -> PixelMaskResult: ...


PIXEL_MASKERS: Registry[Callable[..., PixelMasker]] = Registry("pixel masker")


def register_pixel_masker(
    name: str, *, needs: tuple[str, ...] = ()
) -> Callable[[Callable[..., PixelMasker]], Callable[..., PixelMasker]]:
    """Register a pixel-masker factory under ``name`` (``needs``: batch columns it reads)."""
    return PIXEL_MASKERS.register(name, needs=needs)


def list_pixel_maskers(filter: str = "") -> list[str]:  # noqa: A002 (timm's name)
    """Sorted names of the registered pixel maskers, optionally those containing ``filter``."""
    return PIXEL_MASKERS.names(filter)


def pixel_masker_needs(name: str) -> tuple[str, ...]:
    """The batch columns that pixel masker ``name`` reads."""
    return PIXEL_MASKERS.entry(name).needs


def create_pixel_masker(name: str, **params: Any) -> PixelMasker:
    """Build the pixel masker registered as ``name``; unknown names list the valid ones."""
    return PIXEL_MASKERS.create(name, **params)  # type: ignore[no-any-return]


def _column(batch: Mapping[str, Any], key: str, masker: str) -> torch.Tensor:
    if key not in batch or batch[key] is None:
        raise ValueError(f"the {masker} masker needs a {key!r} column; the batch has "
                         f"{sorted(batch)}")
    return as_tensor(batch[key], name=key)


def zero_pixels(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A copy of images [B, H, W] or [B, C, H, W] with the pixels of mask [B, H, W] set to 0."""
    keep = ~mask.to(images.device)
    keep = keep[:, None] if images.ndim == 4 else keep
    return images * keep.to(images.dtype) if images.is_floating_point() else images * keep


@register_pixel_masker("anatomical", needs=(C.IMAGE, C.GAZE))
def _anatomical(ratio: float, ties: str = "exact") -> PixelMasker:
    """Zero the top-activated ``ratio`` of each image's (resized) gaze heatmap; ties at the
    threshold are taken in the generator's random order (seeded with 0 when none is given)."""
    target = check_ratio(ratio)

    def masker(batch: Mapping[str, Any], *,
               generator: torch.Generator | None = None) -> PixelMaskResult:
        images = _column(batch, C.IMAGE, "anatomical")
        heat = _column(batch, C.GAZE, "anatomical")
        mask, achieved = anatomical_mask(heat, target, size=tuple(images.shape[-2:]), ties=ties,
                                         generator=generator)
        return PixelMaskResult(zero_pixels(images, mask), mask, achieved)

    return masker


@register_pixel_masker("non_anatomical", needs=(C.IMAGE,))
def _non_anatomical(
    ratio: float,
    max_tries: int = 4096,
    side_range: Sequence[float] = (0.02, 0.3),
    labels: Sequence[int] = ANATOMY_LABELS,
    threshold: float = 0.2,
) -> PixelMasker:
    """Black rectangles outside the anatomy; the region is the batch's ``anatomy`` column,
    else its ``organs`` (``labels``), else its ``gaze`` heatmap (``threshold`` x max)."""
    target = check_ratio(ratio)
    sides = (float(side_range[0]), float(side_range[1]))

    def masker(batch: Mapping[str, Any], *,
               generator: torch.Generator | None = None) -> PixelMaskResult:
        images = _column(batch, C.IMAGE, "non_anatomical")
        region = _anatomy_of(batch, tuple(int(v) for v in labels), threshold)
        mask, achieved = non_anatomical_mask(region, target, generator, max_tries,
                                             side_range=sides)
        return PixelMaskResult(zero_pixels(images, mask), mask, achieved)

    return masker


def _anatomy_of(batch: Mapping[str, Any], labels: tuple[int, ...],
                threshold: float) -> torch.Tensor:
    for key in (C.ANATOMY, C.ORGANS, C.GAZE):
        if batch.get(key) is not None:
            if key == C.ANATOMY:
                return as_tensor(batch[key], name=key).to(torch.bool)
            if key == C.ORGANS:
                return anatomy_region(organs=batch[key], labels=labels)
            return anatomy_region(heatmap=batch[key], threshold=threshold)
    raise ValueError("the non_anatomical masker needs an 'anatomy', 'organs' or 'gaze' column; "
                     f"the batch has {sorted(batch)}")


@register_pixel_masker("contour_overlay", needs=(C.IMAGE, C.ORGANS))
def _contour_overlay(
    alpha: float = 1.0,
    thickness: int = 1,
    structures: Sequence[tuple[Sequence[int], Sequence[float]]] = DEFAULT_STRUCTURES,
) -> PixelMasker:
    """Coloured anatomical contours on RGB copies (lungs red, heart blue by default)."""

    def masker(batch: Mapping[str, Any], *,
               generator: torch.Generator | None = None) -> PixelMaskResult:
        images = _column(batch, C.IMAGE, "contour_overlay")
        organs = _column(batch, C.ORGANS, "contour_overlay")
        overlay, touched = contour_overlay(images, organs, alpha, thickness, structures)
        bands = contour_bands(organs.to(overlay.device), [ls for ls, _ in structures], thickness)
        changed = bands.any(1)  # the contour pixels (what alpha * Contour(m) touches)
        return PixelMaskResult(overlay, changed, touched)

    return masker

"""Context-aware augmentation (Segmentation-Guided SSL guide, option 4,
``apply_context_augmentation``), applied to an image and its masks together.

Per sample: a rotation by an angle uniform in +-10 degrees about the image centre, a horizontal
flip with p = 0.5, brightness x b and contrast ``c (x - mean) + mean`` with b, c uniform in
[0.8, 1.2] (+-20 %), and Gaussian noise (sigma 0.02) with p = 0.6; the result is clipped to
[0, 1]. Masks follow the same geometry with nearest sampling (no new labels), and a flip swaps
the organ map's right- and left-lung codes (1 <-> 2): after a mirror the image-left lung is the
other lung.

Vectorized over the batch: the rotation and the flip of every sample are folded into one 2 x 3
affine matrix, and ONE ``F.affine_grid`` + ``F.grid_sample`` call resamples the whole batch
(bilinear for images, nearest for masks; zeros outside the image: black background, organ 0).
All random draws come from one ``torch.Generator`` in a fixed order, so a seed fixes the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from medmask import columns as C
from medmask.keyed import keyed_uniform, mask_seeds, splitmix64


@dataclass(frozen=True)
class AugmentConfig:
    """The guide's ranges; set a probability or a range to 0 to switch that part off."""

    max_rotation_deg: float = 10.0
    flip_p: float = 0.5
    brightness: float = 0.2  # factor uniform in [1 - brightness, 1 + brightness]
    contrast: float = 0.2  # factor uniform in [1 - contrast, 1 + contrast]
    noise_sigma: float = 0.02
    noise_p: float = 0.6

    def __post_init__(self) -> None:
        for name in ("flip_p", "noise_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got "
                                 f"{getattr(self, name)!r}")
        for name in ("max_rotation_deg", "brightness", "contrast", "noise_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got "
                                 f"{getattr(self, name)!r}")


class AugmentParams(NamedTuple):
    """Per-sample draws, each a tensor [B]."""

    angle_deg: torch.Tensor  # float
    flip: torch.Tensor  # bool
    brightness: torch.Tensor  # float factor
    contrast: torch.Tensor  # float factor
    noise: torch.Tensor  # bool: Gaussian noise added


class AugmentResult(NamedTuple):
    images: torch.Tensor  # float32, the input's shape
    organs: torch.Tensor | None  # organ label map [B, H, W], lungs swapped where flipped
    masks: tuple[torch.Tensor, ...]  # other masks [B, H, W], geometry only
    params: AugmentParams


def sample_augment_params(
    batch_size: int, config: AugmentConfig = AugmentConfig(),
    generator: torch.Generator | None = None,
) -> AugmentParams:
    """Draw the per-sample parameters (in this order: angle, flip, brightness, contrast, noise)."""
    device = generator.device if generator is not None else torch.device("cpu")

    def uniform(half_width: float) -> torch.Tensor:
        u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
        return (2 * u - 1) * half_width

    angle = uniform(config.max_rotation_deg)
    flip = torch.rand(batch_size, generator=generator, device=device) < config.flip_p
    brightness = 1 + uniform(config.brightness)
    contrast = 1 + uniform(config.contrast)
    noise = torch.rand(batch_size, generator=generator, device=device) < config.noise_p
    return AugmentParams(angle, flip, brightness, contrast, noise)


def context_augment(
    images: np.ndarray | torch.Tensor,
    organs: np.ndarray | torch.Tensor | None = None,
    masks: Sequence[np.ndarray | torch.Tensor] = (),
    *,
    config: AugmentConfig = AugmentConfig(),
    generator: torch.Generator | None = None,
    params: AugmentParams | None = None,
) -> AugmentResult:
    """Augment a batch of images with their organ map and masks, all in one resampling.

    Args:
        images: float [B, H, W] or [B, C, H, W] in [0, 1].
        organs: optional organ label map [B, H, W] (:mod:`medmask.columns` codes).
        masks: other label maps / bool masks [B, H, W] (lesion, lungs, ...).
        config: ranges and probabilities.
        generator: the source of every random draw (parameters and noise).
        params: explicit per-sample parameters (then only the noise is drawn).
    """
    x = _as_tensor(images).float()
    channel_free = x.ndim == 3
    if channel_free:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"context_augment takes images [B, H, W] or [B, C, H, W], got shape "
                         f"{tuple(images.shape)}")
    b, _, h, w = x.shape
    if params is None:
        params = sample_augment_params(b, config, generator)
    params = AugmentParams(*(p.to(x.device) for p in params))
    grid = F.affine_grid(affine_matrices(params.angle_deg, params.flip, h, w).float(),
                         [b, 1, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = _photometric(out, params.brightness, params.contrast)
    noise = torch.randn(out.shape, generator=generator,
                        device=generator.device if generator is not None else x.device)
    sigma = config.noise_sigma * params.noise.to(out.dtype)
    out = (out + noise.to(out.device) * sigma[:, None, None, None]).clamp(0.0, 1.0)
    out_organs = None
    if organs is not None:
        out_organs = swap_lungs(_resample_mask(_as_tensor(organs), grid, (b, h, w)),
                                params.flip)
    out_masks = tuple(_resample_mask(_as_tensor(m), grid, (b, h, w)) for m in masks)
    return AugmentResult(out[:, 0] if channel_free else out, out_organs, out_masks, params)


def affine_matrices(angle_deg: torch.Tensor, flip: torch.Tensor, height: int,
                    width: int) -> torch.Tensor:
    """``F.affine_grid`` matrices [B, 2, 3]: input = R(angle) @ Flip @ output, about the centre.

    Built in centred pixel units and conjugated by the normalization ``S = diag(W/2, H/2)``
    (``A = S^-1 R Flip S``) so that a rotation of a non-square image stays a rotation.
    """
    a = torch.deg2rad(angle_deg.to(torch.float64))
    cos, sin = torch.cos(a), torch.sin(a)
    sign = 1.0 - 2.0 * flip.to(torch.float64)  # -1 mirrors the output's x
    theta = torch.zeros(len(a), 2, 3, dtype=torch.float64, device=a.device)
    theta[:, 0, 0] = cos * sign
    theta[:, 0, 1] = -sin * height / width
    theta[:, 1, 0] = sin * sign * width / height
    theta[:, 1, 1] = cos
    return theta


def warp_between_views(maps: torch.Tensor, source: AugmentParams, target: AugmentParams
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps [B, C, h, w] laid on the ``source`` views, resampled into the ``target`` views'
    frame (the same images augmented by ``target``), and the overlap bool [B, 1, h, w].

    A view is ``view(p) = image(T p)`` (:func:`affine_matrices`, normalized coordinates, no
    translation), so the source map seen from the target frame is ``map(T_src^-1 T_tgt p)``
    (bilinear, zeros outside); the overlap holds where both ``T_tgt p`` (the target pixel shows
    the image) and ``T_src^-1 T_tgt p`` (the source view shows that point) lie inside [-1, 1]^2.
    Works at any resolution of the maps: the matrices depend on the aspect ratio only.
    """
    if maps.ndim != 4:
        raise ValueError(f"warp_between_views takes maps [B, C, h, w], got {tuple(maps.shape)}")
    b, _, h, w = maps.shape
    t_src = affine_matrices(source.angle_deg, source.flip, h, w)[:, :, :2].to(maps.device)
    t_tgt = affine_matrices(target.angle_deg, target.flip, h, w)[:, :, :2].to(maps.device)
    zero = torch.zeros(b, 2, 1, dtype=torch.float64, device=maps.device)
    composed = torch.cat([torch.linalg.solve(t_src, t_tgt), zero], dim=2)
    grid = F.affine_grid(composed.to(maps.dtype), [b, 1, h, w], align_corners=False)
    shown = F.affine_grid(torch.cat([t_tgt, zero], dim=2).to(maps.dtype), [b, 1, h, w],
                          align_corners=False)
    warped = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    overlap = (grid.abs() <= 1).all(-1) & (shown.abs() <= 1).all(-1)
    return warped, overlap[:, None]


def swap_lungs(organs: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Swap right/left lung codes (1 <-> 2) of organ maps [B, H, W] where ``flip`` [B]."""
    f = flip.to(organs.device)[:, None, None]
    right, left = C.ORGAN_RIGHT_LUNG, C.ORGAN_LEFT_LUNG
    swapped = torch.where(organs == right, left, torch.where(organs == left, right, organs))
    return torch.where(f, swapped.to(organs.dtype), organs)


def _photometric(x: torch.Tensor, brightness: torch.Tensor,
                 contrast: torch.Tensor) -> torch.Tensor:
    """``c (b x - m) + m`` with m the per-image mean of ``b x`` (torchvision's contrast)."""
    x = x * brightness.to(x.dtype)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast.to(x.dtype)[:, None, None, None] + mean


def _resample_mask(mask: torch.Tensor, grid: torch.Tensor, shape: tuple[int, int, int]
                   ) -> torch.Tensor:
    if tuple(mask.shape) != shape:
        raise ValueError(f"context_augment: mask shape {tuple(mask.shape)} must be {shape}")
    sampled = F.grid_sample(mask[:, None].to(grid.device, torch.float32), grid, mode="nearest",
                            padding_mode="zeros", align_corners=False)[:, 0]
    return sampled.round().to(mask.dtype)


def _as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    return array if torch.is_tensor(array) else torch.from_numpy(np.ascontiguousarray(array))


def keyed_augment_params(keys: Any, seed: int, epoch: Any, views: int = 2,
                         config: AugmentConfig = AugmentConfig()) -> list[AugmentParams]:
    """Per-image augmentation parameters of ``views`` views, a pure function of (seed, epoch,
    image key): five keyed uniforms per view (angle, flip, brightness, contrast, noise)."""
    seeds = mask_seeds(np.asarray(keys, np.int64), seed, epoch)
    u = torch.from_numpy(keyed_uniform(seeds, 5 * views)).to(torch.float64)
    out = []
    for v in range(views):
        angle, flip, bright, contrast, noise = u[:, 5 * v:5 * v + 5].unbind(1)
        out.append(AugmentParams((2 * angle - 1) * config.max_rotation_deg,
                                 flip < config.flip_p, 1 + (2 * bright - 1) * config.brightness,
                                 1 + (2 * contrast - 1) * config.contrast, noise < config.noise_p))
    return out


def batch_generator(keys: Any, seed: int, epoch: Any) -> torch.Generator:
    """A generator seeded by the batch's keyed seeds (for the noise pixels)."""
    seeds = mask_seeds(np.asarray(keys, np.int64), seed, epoch).view(np.uint64)
    mixed = splitmix64(np.bitwise_xor.reduce(seeds, keepdims=True))
    return torch.Generator().manual_seed(int(mixed[0] >> np.uint64(1)))

"""Random numbers for mask sampling: from a torch.Generator, or keyed per image.

Keyed noise (:mod:`medmask.keyed`) makes masks a pure function of (per-image seed, patch
index): the same image gets the same mask on any worker and in any batch composition, and a
new mask each epoch when the seed is derived from (run seed, epoch, image id).
"""

from __future__ import annotations

import numpy as np
import torch

from medmask import keyed

mask_seeds = keyed.mask_seeds


def keyed_uniform(seeds: np.ndarray | torch.Tensor, num: int) -> torch.Tensor:
    """Uniform [0, 1) float32 noise [B, num] as a tensor, row b a pure function of
    ``seeds[b]`` (:func:`medmask.keyed.keyed_uniform`)."""
    s = seeds.cpu().numpy() if isinstance(seeds, torch.Tensor) else seeds
    return torch.from_numpy(keyed.keyed_uniform(s, num))


def uniform_noise(
    batch_size: int,
    num: int,
    *,
    generator: torch.Generator | None = None,
    seeds: np.ndarray | torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform [0, 1) noise [B, num]: keyed by ``seeds`` when given, else from ``generator``."""
    if seeds is not None:
        if len(seeds) != batch_size:
            raise ValueError(f"got {len(seeds)} mask seeds for a batch of {batch_size}")
        return keyed_uniform(seeds, num).to(device or "cpu")
    gen_device = generator.device if generator is not None else device
    return torch.rand(batch_size, num, generator=generator, device=gen_device)

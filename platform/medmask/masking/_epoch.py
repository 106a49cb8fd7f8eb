"""Masks drawn anew every epoch, the same for an image on any worker and batch layout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from medmask import columns as C
from medmask.keyed import mask_seeds
from medmask.masking._grid import PatchGrid


def epoch_masks(
    strategy: Any,
    batch: Mapping[str, torch.Tensor],
    grid: PatchGrid,
    ratio: float,
    *,
    seed: int,
    epoch: int,
) -> torch.Tensor:
    """The masks [B, N] of ``strategy`` for one epoch: per-image seeds from (run seed, epoch,
    image id), so an image gets the same mask on any worker and any batch layout within an
    epoch, and a different one the next epoch (never one fixed mask per image).

    ``batch`` needs the ``image_key`` column (int64 hashes of the image ids).
    """
    if C.IMAGE_KEY not in batch:
        raise ValueError(f"epoch masks need the {C.IMAGE_KEY!r} column (the data pipeline "
                         f"writes it); the batch has {sorted(batch)}")
    keys = np.asarray(batch[C.IMAGE_KEY].detach().cpu().numpy(), np.int64)
    view = {k: v for k, v in batch.items() if k != C.IMAGE_KEY}
    view[C.MASK_SEED] = mask_seeds(keys, seed, epoch)
    return strategy(view, grid, ratio)

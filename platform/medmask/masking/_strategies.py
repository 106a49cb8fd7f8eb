"""The registered strategies: thin adapters from the common signature to the building blocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medmask import columns as C
from medmask.masking._grid import PatchGrid
from medmask.masking._patch import random_mask
from medmask.masking._region_guided import region_guided_mask
from medmask.masking._registry import MaskStrategy, register_mask_strategy
from medmask.masking._validate import as_tensor


def batch_size_of(batch: Mapping[str, Any]) -> int:
    """The batch size B of a mapping of tensors/arrays (its first array-like column)."""
    for key in (C.IMAGE, C.MASK_SEED, C.ORGANS):
        if key in batch:
            return len(batch[key])
    for value in batch.values():
        if hasattr(value, "__len__"):
            return len(value)
    raise ValueError(f"cannot tell the batch size of a batch with columns {sorted(batch)}")


@register_mask_strategy("random", needs=())
def _random_strategy() -> MaskStrategy:
    """MAE random patch masking (Mask Creation Methodology)."""

    def strategy(
        batch: Mapping[str, Any],
        grid: PatchGrid,
        ratio: float,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return random_mask(
            batch_size_of(batch), grid, ratio, generator, seeds=batch.get(C.MASK_SEED)
        )

    return strategy


@register_mask_strategy("rgmim", needs=(C.ORGANS,), reports=(C.FILLED_SHARE,))
def _region_guided_strategy(
    valid_labels: tuple[int, ...] | list[int] = C.LUNG_LABELS, min_overlap: float = 0.0,
    region_priority: float | str = "inf",
) -> MaskStrategy:
    """RGMIM region-guided masking on the batch's ``organs`` maps (``region_priority``: the
    valid patches' sampling weight, 1 = random masking, ``inf`` = the paper's rule)."""
    priority = float(region_priority)
    labels = tuple(int(v) for v in valid_labels)

    def strategy(
        batch: Mapping[str, Any],
        grid: PatchGrid,
        ratio: float,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if C.ORGANS not in batch:
            raise ValueError(
                "the rgmim strategy needs an 'organs' column (ground truth or rule-based "
                f"segmentation); the batch has {sorted(batch)}"
            )
        return region_guided_mask(
            batch[C.ORGANS], grid, ratio, generator, valid_labels=labels,
            min_overlap=min_overlap, seeds=batch.get(C.MASK_SEED), region_priority=priority,
        )

    return strategy


@register_mask_strategy("lesion_first", needs=(C.LESION,))
def _lesion_first_strategy() -> MaskStrategy:
    """The oracle control "lesion-first": mask the patches that hold lesion pixels first,
    the rest at random (region-guided masking with the ground-truth lesion map as the
    region). It bounds what choosing *where* to mask can gain: it needs the lesion map, which
    no real pretraining set has."""

    def strategy(
        batch: Mapping[str, Any],
        grid: PatchGrid,
        ratio: float,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if C.LESION not in batch:
            raise ValueError(
                "the lesion_first oracle needs a 'lesion' column (the phantoms' lesion map); "
                f"the batch has {sorted(batch)}"
            )
        lesion = as_tensor(batch[C.LESION], name="lesion") > 0
        return region_guided_mask(lesion, grid, ratio, generator, valid_labels=(1,),
                                  seeds=batch.get(C.MASK_SEED))

    return strategy

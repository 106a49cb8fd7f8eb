"""Model inputs from a batch: images as [B, C, H, W], and mixed precision where it applies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medmask import columns as C


def images_nchw(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The batch's images as float [B, C, H, W] (grayscale [B, H, W] gets C = 1)."""
    images = batch[C.IMAGE]
    if images.ndim == 3:
        images = images.unsqueeze(1)
    return images.float()


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 autocast on GPU when enabled, a no-op context on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)

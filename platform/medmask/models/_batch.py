"""Model inputs from a batch: images as [B, C, H, W], and mixed precision where it applies."""

from __future__ import annotations

import contextlib
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


# ``mixed_precision`` values: True (bf16 autocast where CUDA is present, the default), False
# (fp32), or this string: bf16 autocast on any device, the CPU included (tests, CPU runs).
BF16_EVERYWHERE = "bf16"


def autocast(device: torch.device, enabled: bool | str) -> Any:
    """bf16 autocast on CUDA when ``enabled``; on any device (the CPU too) when ``enabled`` is
    ``"bf16"``; otherwise a no-op context.

    Raises:
        ValueError: ``enabled`` is a string other than ``"bf16"``.
    """
    if isinstance(enabled, str):
        if enabled != BF16_EVERYWHERE:
            raise ValueError(f"mixed_precision must be true, false or {BF16_EVERYWHERE!r}, "
                             f"got {enabled!r}")
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(model: torch.nn.Module, device: torch.device,
                      enabled: bool | None = None) -> torch.nn.Module:
    """``model`` with its 4-d parameters in channels-last memory format (in place), which
    convolutions on CUDA (tensor cores) run faster in, and whose outputs keep the format.

    ``enabled``: None converts where CUDA is present (the default of the loops), True on any
    device, False never. Values are unchanged: only the strides differ.
    """
    if enabled is None:
        enabled = device.type == "cuda"
    if enabled:
        model.to(memory_format=torch.channels_last)
    return model

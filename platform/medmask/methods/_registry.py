"""The registry of learning methods: name -> what its pretraining loop trains and optimizes.

A method builds :class:`LoopParts` (the model and the loss of one batch) from the loop's
config; the one epoch-loop skeleton of :mod:`medmask.train` runs it on Ray Train, on any
worker count. A method declares the batch columns its loss reads, whether it needs a mask
strategy built for it (loading a policy is the caller's job), its default model, and what
fine-tuning reads from its checkpoint (``encode(images) -> [B, D]`` of the trained model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from medmask.registry import Registry

BatchLoss = Callable[[torch.nn.Module, Mapping[str, torch.Tensor], int],
                     tuple[torch.Tensor, int]]
Validate = Callable[[torch.nn.Module, Any, int, torch.device], Mapping[str, float]]


@dataclass(frozen=True)
class LoopParts:
    """What differs between training loops.

    Attributes:
        model: the module the loop optimizes and checkpoints (its ``state_dict``).
        batch_loss: ``(model, batch, epoch) -> (loss, images in the batch)``; ``model`` is the
            prepared (possibly DDP-wrapped) module.
        validate: optional ``(model, val_shard, batch_size, device) -> metrics`` run on rank 0
            after every epoch (logged as ``val/<name>``).
        epoch_metrics: optional ``() -> metrics`` called after every epoch's steps: what
            ``batch_loss`` measured since the last call (logged as named, e.g.
            ``train/seg_mask_dice``).
    """

    model: torch.nn.Module
    batch_loss: BatchLoss
    validate: Validate | None = None
    epoch_metrics: Callable[[], Mapping[str, float]] | None = None


@dataclass(frozen=True)
class Method:
    """A registered learning method.

    Attributes:
        name: ``method=<name>`` in Hydra.
        build: ``(config, device, strategy) -> LoopParts``; ``strategy`` is the built mask
            strategy when ``uses_masks``, else None.
        columns: batch columns the loss reads (besides ``image``).
        uses_masks: the loop draws patch masks (MIM methods): the skeleton builds the
            ``masking`` strategy of the config for it.
        default_model: the registered model it trains unless told otherwise.
        default_masking: the mask strategy it uses unless told otherwise (MIM methods).
        finetune_reads: what fine-tuning takes from the checkpoint (``"encode"``: the trained
            model, through ``encode(images) -> [B, D]``).
        crops_inputs: the method trains on images cropped to the lungs (segmentation-guided
            option 4): the stages crop every split, for pretraining and fine-tuning, by the
            ``crop`` settings, which must then be set.
    """

    name: str
    build: Callable[[Mapping[str, Any], torch.device, Any], LoopParts]
    columns: tuple[str, ...] = ()
    uses_masks: bool = False
    default_model: str = "mae_vit_tiny_64"
    default_masking: str | None = None
    finetune_reads: str = "encode"
    crops_inputs: bool = False


METHODS: Registry[Callable[[], Method]] = Registry("learning method")


def register_method(name: str) -> Callable[[Callable[[], Method]], Callable[[], Method]]:
    """Register a factory ``() -> Method`` under ``name``."""
    return METHODS.register(name)


def create_method(name: str) -> Method:
    """The method registered as ``name``; an unknown name lists the valid ones."""
    method = METHODS.create(name)
    if not isinstance(method, Method):
        raise TypeError(f"method {name!r} factory returned {type(method).__name__}, not Method")
    return method


def list_methods(filter: str = "") -> list[str]:  # noqa: A002 (timm's name)
    """Sorted names of the registered methods."""
    return METHODS.names(filter)

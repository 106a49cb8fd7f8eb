"""The pretraining loop: any registered learning method on the one epoch-loop skeleton.

Config keys, besides the skeleton's (:mod:`medmask.train._loop`): ``method`` (a name of
:func:`medmask.methods.list_methods`, default ``mae``), ``model`` ({name, params}),
``masking`` ({name, ratio, params}: for the methods that mask; an AHM policy is loaded from
``params.policy_checkpoint``), ``mixed_precision``.
"""

from __future__ import annotations

from typing import Any

import torch

from medmask.methods import LoopParts, create_method
from medmask.train._loop import run_epochs
from medmask.train._masks import build_mask_strategy

DEFAULT_METHOD = "mae"


def pretrain_parts(config: dict[str, Any], device: torch.device) -> LoopParts:
    """The parts of the configured method, with its mask strategy built when it masks."""
    method = create_method(str(config.get("method") or DEFAULT_METHOD))
    strategy = build_mask_strategy(config["masking"], device=device) if method.uses_masks else None
    return method.build(config, device, strategy)


def pretrain_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop: self-supervised pretraining with the configured method."""
    run_epochs(config, pretrain_parts, what="pretraining")

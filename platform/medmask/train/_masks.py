"""Mask strategies from plain settings, loading a trained AHM policy where one is named.

The masking room takes already-loaded modules (``create_mask_strategy("ahm", policy=net)``);
loading checkpoints happens here, outside it: ``masking.params.policy_checkpoint`` names a
``policy.pt`` (``medmask.rl.save_policy``) and the loaded network becomes ``policy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medmask.masking import MaskStrategy, create_mask_strategy, strategy_requires
from medmask.rl import load_policy, policy_digest

POLICY_CHECKPOINT = "policy_checkpoint"


def build_mask_strategy(masking: Mapping[str, Any],
                        device: str | torch.device = "cpu") -> MaskStrategy:
    """The strategy ``masking['name']`` with ``masking['params']`` (policy loaded for ahm)."""
    params = dict(masking.get("params") or {})
    checkpoint = params.pop(POLICY_CHECKPOINT, None)
    name = masking["name"]
    if "policy" in strategy_requires(name) and "policy" not in params:
        if not checkpoint:
            raise ValueError(
                f"masking={name} needs masking.params.policy_checkpoint: the policy.pt of a "
                "trained AHM policy (experiments/ahm.py writes one)")

        params["policy"] = load_policy(checkpoint, device=device)
    return create_mask_strategy(name, **params)


def masking_cache_key(masking: Mapping[str, Any]) -> dict[str, Any]:
    """``masking`` with the policy file's digest added: a retrained policy at the same path is
    a different pretraining (the cache must not serve the old one)."""
    key = dict(masking)
    checkpoint = (masking.get("params") or {}).get(POLICY_CHECKPOINT)
    if checkpoint:

        key["policy_digest"] = policy_digest(checkpoint)
    return key

"""AHM mask sampling from a policy: the RL side of :func:`medmask.masking.ahm_mask`.

The sampler itself (fixed count floor(ratio * N), a share p uniform, the rest a Plackett-Luce
draw on the policy's logits; AHM section IV-A) lives in the masking room as pure torch, so
pretraining runs use it through the registry (``create_mask_strategy("ahm", policy=...)``)
without importing Ray. This module adds what the RL side and the figures need: masks together
with the logits they were drawn from.
"""

from __future__ import annotations

import torch

from medmask.masking import PatchGrid, ahm_draw, ahm_mask, inclusion_rate, num_random, policy_logits


def sample_policy_masks(
    policy: torch.nn.Module,
    images: torch.Tensor,
    grid: PatchGrid,
    ratio: float = 0.75,
    random_share: float = 0.3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masks bool [B, N], logits z [B, N]) of a policy on images [B, C, H, W].

    The masks are :func:`ahm_mask` draws on z (AHM Fig. 8's "masking probability" of a patch
    is its inclusion rate over such draws, :func:`medmask.masking.inclusion_rate`).
    """
    logits = policy_logits(policy, images)
    if generator is not None:
        logits = logits.to(generator.device)
    return ahm_mask(logits, grid, ratio, random_share, generator), logits


__all__ = ["ahm_draw", "ahm_mask", "inclusion_rate", "num_random", "sample_policy_masks"]

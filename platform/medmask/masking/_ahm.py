"""Adaptive hard masking (AHM) mask sampling: a fixed count, part random, part loss-guided.

Source: AHM (IEEE TMI), section IV-A and Table V. The policy predicts, for every patch, how
hard it is to reconstruct; ``floor(ratio * N)`` patches are masked, a share ``p`` of them
(default 30%) uniformly at random ("we reserve p% random sampling probability ... to provide
some reasonable hints" and to keep exploring) and the rest sampled *in proportion to* the
predicted difficulty, so that p = 1 is plain random masking and p = 0 the hardest pretext task.

Sampling without replacement in proportion to weights ``w_i`` is the Gumbel-top-k trick
(Kool et al., 2019): the k largest ``log w_i + Gumbel_i`` are a draw of k items from the
successive-draws (Plackett-Luce) distribution with probabilities proportional to ``w``.
Everything is one vectorized pass over the batch, built on :func:`mask_lowest`.

This module is pure torch (the masking room knows nothing of Ray); the RL side
(``medmask.rl``) samples its actions with the same function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from medmask import columns as C
from medmask.masking._grid import PatchGrid
from medmask.masking._noise import uniform_noise
from medmask.masking._patch import mask_lowest
from medmask.masking._registry import MaskStrategy, register_mask_strategy
from medmask.masking._validate import as_tensor, num_masked

_TINY = 1e-12  # floor of the weights before the log: zero-weight patches come last, not NaN


def check_random_share(random_share: float) -> float:
    """Return ``random_share`` as a float after checking 0 <= p <= 1 (AHM Table V's p)."""
    try:
        value = float(random_share)
    except (TypeError, ValueError):
        raise ValueError(f"random_share must be a number in [0, 1], got {random_share!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {random_share!r}")
    return value


def num_random(count: int, random_share: float) -> int:
    """How many of ``count`` masked patches are uniform random: round(p * count), half up."""
    return int(math.floor(check_random_share(random_share) * count + 0.5))


def fixed_count_sample(
    scores: torch.Tensor,
    count: int,
    random_share: float = 0.3,
    generator: torch.Generator | None = None,
    seeds: Any = None,
) -> torch.Tensor:
    """Bool [B, N] with exactly ``count`` True per row: round(p*count) uniform, rest by score.

    Args:
        scores: [B, N] non-negative per-patch weights (the policy's masking probabilities or
            predicted losses); larger = more likely masked. Zeros are allowed.
        count: masked patches per row, 0 <= count <= N.
        random_share: p, the share of ``count`` drawn uniformly at random (AHM Table V).
        generator: torch generator on ``scores``' device for reproducible draws.
        seeds: optional int64 [B] per-image seeds (the batch's ``mask_seed``): the draws then
            depend only on each image's seed, not on the worker or the batch layout.

    Returns:
        bool [B, N], True = masked.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    batch_size, n = scores.shape
    if not 0 <= count <= n:
        raise ValueError(f"cannot mask {count} of {n} patches")
    if torch.isnan(scores).any() or (scores < 0).any():
        raise ValueError("scores must be non-negative and not NaN (weights of a sampler)")
    n_random = num_random(count, random_share)
    shape, device = (batch_size, n), scores.device
    # Uniform keys pick the random part: its patches get key -inf so mask_lowest keeps them.
    if seeds is not None:
        both = uniform_noise(batch_size, 2 * n, seeds=seeds, device=device)
        uniform, u = both[:, :n], both[:, n:].clone()
    else:
        uniform = torch.rand(shape, generator=generator, device=device)
        u = torch.rand(shape, generator=generator, device=device)
    random_part = mask_lowest(uniform, n_random)
    # Gumbel-top-k on log(score): the k smallest of -(log w + G) are a proportional draw.
    u = u.clamp_(_TINY, 1.0 - 1e-7)
    gumbel = -torch.log(-torch.log(u))
    keys = -(torch.log(scores.detach().float().clamp_min(_TINY)) + gumbel)
    keys = keys.masked_fill(random_part, float("-inf"))
    return mask_lowest(keys, count)


def ahm_mask(
    scores: torch.Tensor,
    grid: PatchGrid,
    ratio: float,
    random_share: float = 0.3,
    generator: torch.Generator | None = None,
    seeds: Any = None,
) -> torch.Tensor:
    """AHM masks: exactly floor(ratio * N) patches per row, a share ``random_share`` at random.

    AHM section IV-A: the remaining ``count - round(p * count)`` patches are drawn without
    replacement in proportion to ``scores`` (Gumbel-top-k), so hard patches are more likely
    masked but never certain; ``random_share=1`` is plain random masking, ``0`` the hardest.

    Args:
        scores: [B, N] non-negative per-patch weights (policy probabilities), N = grid patches.
        grid: the consumer model's patch grid.
        ratio: masking ratio r in [0, 1).
        random_share: p in [0, 1] (default 0.3 as in the paper).
        generator: torch generator for reproducible masks.

    Returns:
        bool [B, N], True = masked.
    """
    scores = as_tensor(scores, name="scores")
    if scores.ndim != 2 or scores.shape[1] != grid.num_patches:
        raise ValueError(
            f"scores must be [B, {grid.num_patches}] for {grid}, got {tuple(scores.shape)}"
        )
    return fixed_count_sample(scores, num_masked(grid.num_patches, ratio), random_share,
                              generator, seeds=seeds)


WEIGHTINGS = ("probability", "odds")


def sampling_weights(probabilities: torch.Tensor, weighting: str = "probability") -> torch.Tensor:
    """The weights the loss-guided part samples in proportion to, from pi(mask i | s_i).

    ``"probability"``: pi itself (AHM's wording). ``"odds"``: pi / (1 - pi) = exp(logit), which
    keeps the policy's ranking sharp once the sigmoid saturates (all pi near 1 make
    probability weights nearly uniform).
    """
    if weighting == "probability":
        return probabilities
    if weighting == "odds":
        p = probabilities.clamp(1e-6, 1.0 - 1e-6)
        return p / (1.0 - p)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def policy_scores(policy: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per-patch masking probabilities [B, N] of a loaded AHM policy on images [B, C, H, W].

    Uses ``policy.patch_probabilities(images)`` when the module has it (the AHM RLModule and
    its network do), else ``policy(images)``; the policy runs in eval mode without gradients.
    """
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            if hasattr(policy, "patch_probabilities"):
                return policy.patch_probabilities(images)
            return policy(images)
    finally:
        policy.train(was_training)


@register_mask_strategy("ahm", needs=(C.IMAGE,), requires=("policy",))
def _ahm_strategy(
    policy: torch.nn.Module, random_share: float = 0.3, weighting: str = "probability"
) -> MaskStrategy:
    """AHM masks from a trained (already loaded) policy network on the batch's images."""
    if not isinstance(policy, torch.nn.Module):
        raise ValueError(f"the ahm strategy needs a loaded policy nn.Module, got {type(policy)}")
    share = check_random_share(random_share)
    sampling_weights(torch.full((1, 1), 0.5), weighting)  # validates the name

    def strategy(
        batch: Mapping[str, Any],
        grid: PatchGrid,
        ratio: float,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if C.IMAGE not in batch:
            raise ValueError(f"the ahm strategy needs an 'image' column; got {sorted(batch)}")
        images = as_tensor(batch[C.IMAGE], name="image").float()
        if images.ndim == 3:  # [B, H, W] rows of the data pipeline -> one channel
            images = images[:, None]
        device = next(policy.parameters()).device
        scores = sampling_weights(policy_scores(policy, images.to(device)), weighting)
        if generator is not None:
            scores = scores.to(generator.device)
        return ahm_mask(scores, grid, ratio, share, generator, seeds=batch.get(C.MASK_SEED))

    return strategy

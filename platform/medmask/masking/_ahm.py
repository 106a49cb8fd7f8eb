"""Adaptive hard masking (AHM): a fixed count, a random share, then a Plackett-Luce draw.

Source: AHM (IEEE TMI), section IV-A and Table V, with the sampler made exact. The policy
gives one logit ``z_i`` per patch; ``k = floor(ratio * N)`` patches are masked:

1. ``n_r = round(p * k)`` of them uniformly at random ("we reserve p% random sampling
   probability ... to provide some reasonable hints"; p = 1 is plain random masking);
2. the other ``k - n_r`` by a Plackett-Luce (successive-draws) draw on ``z`` over the patches
   the random share left: pick t takes patch j in S_t with probability
   ``pi_t(j) = exp(z_j) / sum_{l in S_t} exp(z_l)``, S_t = patches neither random nor
   already picked. Gumbel-top-k (Kool et al., 2019) draws it in one vectorized pass: the
   ``k - n_r`` largest ``z_j + Gumbel_j`` over S_0, in decreasing order, are the picks in
   draw order.

The draw is the ORDERED index vector ``[random picks..., policy picks in draw order]``
(:func:`ahm_draw`): the order is what makes the log-prob exact and cheap
(:func:`plackett_luce_log_prob`, sum over picks of ``z_{i_t} - logsumexp_{S_t} z``), and the
split says which picks the policy made. :func:`ahm_mask` turns it into the boolean mask.
A common shift of all logits changes no probability, so the log-prob gives it zero gradient.

This module is pure torch (the masking room knows nothing of Ray); the RL side
(``medmask.rl``) samples its actions and computes their log-probs with these functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from medmask import columns as C
from medmask.masking._grid import PatchGrid
from medmask.masking._noise import uniform_noise
from medmask.masking._registry import MaskStrategy, register_mask_strategy
from medmask.masking._validate import as_tensor, num_masked

_TINY = 1e-12  # floor of the uniforms before the logs of the Gumbel noise


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


def ahm_draw(
    logits: torch.Tensor,
    count: int,
    random_share: float = 0.3,
    generator: torch.Generator | None = None,
    seeds: Any = None,
) -> torch.Tensor:
    """The ordered AHM draw: int64 [B, count] patch indices, distinct in every row.

    Columns ``[:n_r]`` (``n_r = num_random(count, random_share)``) are uniform random picks in
    random order; columns ``[n_r:]`` the Plackett-Luce picks on ``logits`` over the rest, in
    draw order (module docstring).

    Args:
        logits: [B, N] finite per-patch logits z (larger = more likely masked).
        count: masked patches per row k, 0 <= k <= N.
        random_share: p, the share of ``count`` drawn uniformly (AHM Table V).
        generator: torch generator on ``logits``' device for reproducible draws.
        seeds: optional int64 [B] per-image seeds (the batch's ``mask_seed``): the draws then
            depend only on each image's seed, not on the worker or the batch layout.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, N], got shape {tuple(logits.shape)}")
    batch_size, n = logits.shape
    if not 0 <= count <= n:
        raise ValueError(f"cannot mask {count} of {n} patches")
    z = logits.detach().float()
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits must be finite (NaN/inf logits of a masking policy)")
    n_random = num_random(count, random_share)
    noise = uniform_noise(batch_size, 2 * n, generator=generator, seeds=seeds,
                          device=z.device).to(z.device)
    uniform, u = noise[:, :n], noise[:, n:]
    random_part = torch.topk(uniform, n_random, dim=1, largest=False, sorted=True).indices
    gumbel = -torch.log(-torch.log(u.clamp(_TINY, 1.0 - 1e-7)))
    keys = (z + gumbel).scatter(1, random_part, float("-inf"))
    policy_part = torch.topk(keys, count - n_random, dim=1, largest=True, sorted=True).indices
    return torch.cat([random_part, policy_part], dim=1)


def draw_to_mask(indices: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Bool [B, N] masks of ordered draws int64 [B, k] (True = masked)."""
    indices = torch.as_tensor(indices).long()
    mask = torch.zeros(indices.shape[0], num_patches, dtype=torch.bool, device=indices.device)
    return mask.scatter_(1, indices, True)


def available_before(indices: torch.Tensor, num_patches: int) -> torch.Tensor:
    """S_t for every pick: bool [B, k, N], True where patch j is not among picks 0..t-1."""
    onehot = torch.nn.functional.one_hot(indices.long(), num_patches).to(torch.int32)
    taken_before = onehot.cumsum(dim=1) - onehot
    return taken_before == 0


def masked_log_softmax(logits: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """log pi_t(j) = z_j - logsumexp_{l in S_t} z_l, [B, k, N]; 0 outside S_t.

    ``logits`` [B, N], ``available`` bool [B, k, N]. Finite for any S_t, empty included (then
    the row is all 0): no -inf enters the graph, so gradients stay finite too.
    """
    z = logits.unsqueeze(1).expand(available.shape)
    top = z.masked_fill(~available, float("-inf")).amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    shifted = torch.where(available, z - top, torch.zeros_like(z))
    total = (shifted.exp() * available).sum(dim=-1, keepdim=True)
    lse = torch.log(total.clamp_min(torch.finfo(total.dtype).tiny)) + top
    return torch.where(available, z - lse, torch.zeros_like(z))


def plackett_luce_log_prob(
    logits: torch.Tensor, indices: torch.Tensor, n_random: int
) -> torch.Tensor:
    """Exact per-pick log-probs of the policy's part of an ordered draw, [B, k - n_r].

    ``log P(i_t | R, i_{n_r}, ..., i_{t-1}) = z_{i_t} - logsumexp_{j in S_t} z_j`` for the
    policy picks t = n_r..k-1, S_t the patches neither random nor already picked (module
    docstring); the random picks R = ``indices[:, :n_r]`` are no policy action and get no
    term. Their sum is the log-prob of the policy's picks given R.
    """
    per_pick = masked_log_softmax(logits, available_before(indices, logits.shape[-1]))
    policy = indices[:, n_random:].long()
    return per_pick[:, n_random:].gather(-1, policy.unsqueeze(-1)).squeeze(-1)


def ahm_mask(
    logits: torch.Tensor,
    grid: PatchGrid,
    ratio: float,
    random_share: float = 0.3,
    generator: torch.Generator | None = None,
    seeds: Any = None,
) -> torch.Tensor:
    """AHM masks: exactly floor(ratio * N) patches per row, a share ``random_share`` at random.

    The rest are a Plackett-Luce draw on ``logits`` (:func:`ahm_draw`): hard patches are more
    likely masked but never certain; ``random_share=1`` is plain random masking.

    Args:
        logits: [B, N] finite per-patch logits of the policy, N = grid patches.
        grid: the consumer model's patch grid.
        ratio: masking ratio r in [0, 1).
        random_share: p in [0, 1] (default 0.3 as in the paper).
        generator: torch generator for reproducible masks.
        seeds: optional per-image int64 seeds (see :func:`ahm_draw`).

    Returns:
        bool [B, N], True = masked.
    """
    logits = as_tensor(logits, name="logits")
    if logits.ndim != 2 or logits.shape[1] != grid.num_patches:
        raise ValueError(
            f"logits must be [B, {grid.num_patches}] for {grid}, got {tuple(logits.shape)}"
        )
    draw = ahm_draw(logits, num_masked(grid.num_patches, ratio), random_share, generator,
                    seeds=seeds)
    return draw_to_mask(draw, grid.num_patches)


def inclusion_rate(
    logits: torch.Tensor,
    count: int,
    random_share: float = 0.3,
    draws: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """How often each patch is masked over ``draws`` AHM draws, [B, N] in [0, 1].

    AHM Fig. 8's "masking probability" of a patch under the ordered draw (it has no closed
    form per patch); 64 draws by default.
    """
    batch_size, n = logits.shape
    repeated = logits.detach().repeat_interleave(draws, dim=0)
    masks = draw_to_mask(ahm_draw(repeated, count, random_share, generator), n)
    return masks.float().reshape(batch_size, draws, n).mean(dim=1)


def policy_logits(policy: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per-patch logits z [B, N] of a loaded AHM policy on images [B, C, H, W].

    Uses ``policy.masking_logits(images)`` when the module has it (the AHM RLModule and its
    network do), else ``policy(images)``; the policy runs in eval mode without gradients.
    """
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            if hasattr(policy, "masking_logits"):
                return policy.masking_logits(images)
            return policy(images)
    finally:
        policy.train(was_training)


@register_mask_strategy("ahm", needs=(C.IMAGE,), requires=("policy",))
def _ahm_strategy(policy: torch.nn.Module, random_share: float = 0.3) -> MaskStrategy:
    """AHM masks from a trained (already loaded) policy network on the batch's images."""
    if not isinstance(policy, torch.nn.Module):
        raise ValueError(f"the ahm strategy needs a loaded policy nn.Module, got {type(policy)}")
    share = check_random_share(random_share)

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
        logits = policy_logits(policy, images.to(device))
        if generator is not None:
            logits = logits.to(generator.device)
        return ahm_mask(logits, grid, ratio, share, generator, seeds=batch.get(C.MASK_SEED))

    return strategy

"""The AHM policy update in one screen, in-process and without Ray (CleanRL style).

The same loss as the RLlib learner (:func:`~medmask.rl._learner.ahm_pick_loss_terms`) and the
same sampler as the EnvRunners (:func:`medmask.masking.ahm_draw`), on-policy: behaviour,
target and current policies coincide, so every importance ratio is 1. It is the reference
the tests learn a synthetic task with, and a quick way to train a policy on one machine;
:func:`medmask.rl.train_policy` is the asynchronous, distributed run of the same objective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medmask.masking import ahm_draw, draw_to_mask, num_masked
from medmask.rl._distribution import mask_distribution
from medmask.rl._learner import ahm_pick_loss_terms
from medmask.rl._module import MaskingPolicyNet
from medmask.rl._numerics import check_finite

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, masks) -> [B, N]


def local_update(
    net: MaskingPolicyNet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    reward_fn: RewardFn,
    *,
    mask_ratio: float = 0.75,
    random_share: float = 0.3,
    credit: str = "myopic",
    vf_loss_coeff: float = 1.0,
    entropy_coeff: float = 0.0,
    grad_clip: float | None = 40.0,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One on-policy update on a batch of images [B, C, H, W]; returns its metrics.

    ``reward_fn(images, masks)`` gives the per-patch reconstruction losses [B, N] of bool
    masks (only the masked entries are used: the reward is the masked patches' loss).
    """
    net.train()
    logits, values = net(images)
    n = logits.shape[-1]
    dist = mask_distribution(mask_ratio, random_share)(logits)
    draw = ahm_draw(logits.detach(), num_masked(n, mask_ratio), random_share, generator)
    with torch.no_grad():
        losses = reward_fn(images, draw_to_mask(draw, n)).float()
    check_finite("reward (masked-patch reconstruction loss)", losses.gather(1, draw))
    logp = dist.pick_logp(draw)
    with torch.no_grad():
        baselines = (dist.pick_probs(draw) * values.detach().unsqueeze(1)).sum(dim=-1)
    terms = ahm_pick_loss_terms(
        pick_losses=losses.gather(1, draw), pick_values=values.gather(1, draw),
        n_random=dist.num_random, logp=logp, behaviour_logp=logp.detach(),
        old_logp=logp.detach(), baselines=baselines, entropy=dist.pick_entropy(draw),
        credit=credit,
    )
    loss = terms.policy_loss + vf_loss_coeff * terms.value_loss - entropy_coeff * terms.entropy
    check_finite("total loss", loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip or float("inf"))
    check_finite("gradient norm", norm)
    optimizer.step()
    centred = logits.detach() - logits.detach().mean(dim=-1, keepdim=True)
    return {
        "losses/policy_loss": float(terms.policy_loss.detach()),
        "losses/value_loss": float(terms.value_loss.detach()),
        "losses/entropy": float(terms.entropy.detach()), "losses/grad_norm": float(norm),
        "charts/mean_pick_loss": float(losses.gather(1, draw).mean()),
        "charts/logit_mean": float(logits.detach().mean()),
        "charts/logit_spread": float(centred.std()),
    }


def train_policy_local(
    net: MaskingPolicyNet,
    reward_fn: RewardFn,
    images: np.ndarray | torch.Tensor,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    **update: Any,
) -> list[dict[str, float]]:
    """``steps`` on-policy updates (Adam) on batches drawn from ``images``; returns the history.

    ``update`` takes :func:`local_update`'s keywords (mask_ratio, random_share, credit, ...).
    """
    x = torch.as_tensor(np.asarray(images, np.float32))
    if x.ndim == 3:
        x = x[:, None]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    for step in range(int(steps)):
        batch = x[torch.randint(0, len(x), (batch_size,), generator=generator)]
        metrics = local_update(net, optimizer, batch, reward_fn, generator=generator, **update)
        history.append({"step": step, **metrics})
    net.eval()
    return history

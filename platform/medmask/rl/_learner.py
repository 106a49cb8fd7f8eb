"""The AHM actor-critic loss, per patch, inside RLlib's APPO learner.

Source: AHM section IV-B, eq. 8-12 (the matrix form of A3C's updates, every patch an agent)::

    value loss   L_v  = 1/N 1^T [(r - V(s)) * (r - V(s))] 1            (eq. 8)
    advantage    A_i  = r_i - V(s_i)                                    (eq. 9)
    policy loss  L_pi = -1/N 1^T [log pi(a|s) * A(a, s)] 1              (eq. 10)
    trunk        d_phi = grad(L_pi) + grad(L_v)                         (eq. 11-12)

An episode is one terminated step, so there is no bootstrapping: the return of patch i is r_i.
RLlib's asynchronous actor-critic (APPO; A3C is gone from RLlib) learns from slightly stale
EnvRunner samples, so its importance ratios are applied here PER PATCH, never as a product over
the N patches (a product of 256 ratios saturates any clip):

- V-trace for a single terminated step (Espeholt et al. 2018, eq. 1 with gamma * (1 - done) = 0):
  ``rho_i = pi_old(a_i|s_i) / mu(a_i|s_i)`` (``pi_old`` = APPO's target network, ``mu`` = the
  EnvRunner's behaviour policy), value target ``v_i = V_i + min(rho_bar, rho_i) (r_i - V_i)``,
  policy-gradient advantage ``A_i = min(rho_bar_pg, rho_i) (r_i - V_i)``;
- APPO's clipped surrogate per patch: ``ratio_i = clip(mu_i / pi_old_i, 0, 2) * pi_i / mu_i``,
  ``min(ratio_i A_i, clip(ratio_i, 1 - eps, 1 + eps) A_i)``.

On-policy (pi = pi_old = mu) every ratio is 1, ``v_i = r_i`` and ``A_i = r_i - V_i``: the loss
value of L_v is eq. 8 and the gradient of the surrogate is exactly the gradient of eq. 10. The
log-probabilities are the independent-agent Bernoulli terms of
:class:`~medmask.rl._distribution.PatchBernoulli` (its docstring says how they relate to the
fixed-count masks actually sampled). All patch terms are averaged over patches, then over the
batch rows that count (``loss_mask``: RLlib appends one bootstrap row per episode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from ray.rllib.algorithms.appo.appo import (
    LEARNER_RESULTS_CURR_KL_COEFF_KEY,
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_MEAN_IS_KEY,
    LEARNER_RESULTS_VAR_IS_KEY,
)
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS

from medmask import columns as C

MEAN_PATCH_REWARD_KEY = "mean_patch_reward"
MEAN_PATCH_VALUE_KEY = "mean_patch_value"


@dataclass(frozen=True)
class PatchLossTerms:
    """The scalar terms of the AHM loss (each averaged over patches and counted rows)."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor
    mean_is_ratio: torch.Tensor
    var_is_ratio: torch.Tensor


def _row_mean(per_patch: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
    """Mean over patches, then over the rows where ``row_mask`` is 1."""
    rows = per_patch.mean(dim=-1)
    return (rows * row_mask).sum() / row_mask.sum().clamp(min=1.0)


def ahm_patch_loss_terms(
    *,
    patch_rewards: torch.Tensor,
    patch_values: torch.Tensor,
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    old_logp: torch.Tensor,
    entropy: torch.Tensor,
    kl: torch.Tensor | None = None,
    row_mask: torch.Tensor | None = None,
    clip_param: float = 0.4,
    clip_rho: float = 1.0,
    clip_pg_rho: float = 1.0,
    center_advantages: bool = False,
) -> PatchLossTerms:
    """AHM eq. 8-10 per patch with APPO's per-patch importance ratios (module docstring).

    Args:
        patch_rewards: r_i, [B, N].
        patch_values: V(s_i) of the current network, [B, N] (gradients flow here).
        logp: log pi(a_i|s_i) of the current network, [B, N] (gradients flow here).
        behaviour_logp: log mu(a_i|s_i) of the EnvRunner policy that sampled a, [B, N].
        old_logp: log pi_old(a_i|s_i) of APPO's target network, [B, N].
        entropy: per-patch entropies of the current policy, [B, N].
        kl: per-patch KL(pi_old || pi), [B, N], or None (then reported as 0).
        row_mask: [B] 1 for rows in the loss, 0 for RLlib's bootstrap rows (default: all 1).
        clip_param: APPO's surrogate clip epsilon.
        clip_rho: V-trace rho-bar of the value target.
        clip_pg_rho: V-trace rho-bar of the policy-gradient advantage.
        center_advantages: subtract each image's mean advantage over its patches (off by
            default; see :class:`AHMLearner` for why it helps with the fixed-count sampler).
    """
    mask = (
        torch.ones(patch_rewards.shape[0], device=patch_rewards.device)
        if row_mask is None
        else row_mask.to(patch_rewards.dtype)
    )
    behaviour_logp, old_logp = behaviour_logp.detach(), old_logp.detach()
    rho = torch.exp(old_logp - behaviour_logp)
    error = (patch_rewards - patch_values).detach()
    value_target = patch_values.detach() + torch.clamp(rho, max=clip_rho) * error
    advantage = torch.clamp(rho, max=clip_pg_rho) * error  # eq. 9, V-trace weighted
    if center_advantages:
        advantage = advantage - advantage.mean(dim=-1, keepdim=True)

    is_ratio = torch.clamp(torch.exp(behaviour_logp - old_logp), 0.0, 2.0)
    ratio = is_ratio * torch.exp(logp - behaviour_logp)
    surrogate = torch.minimum(
        advantage * ratio, advantage * torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param)
    )
    mean_is = _row_mean(is_ratio, mask)
    return PatchLossTerms(
        policy_loss=-_row_mean(surrogate, mask),  # eq. 10
        value_loss=_row_mean((value_target - patch_values) ** 2, mask),  # eq. 8
        entropy=_row_mean(entropy, mask),
        kl=_row_mean(kl, mask) if kl is not None else torch.zeros((), device=mask.device),
        mean_is_ratio=mean_is,
        var_is_ratio=_row_mean((is_ratio - mean_is) ** 2, mask),
    )


class AHMLearner(APPOTorchLearner):
    """APPO's torch learner with the per-patch AHM loss (eq. 8-12).

    Needs the ``PATCH_REWARDS`` column (added by
    :class:`~medmask.rl._connector.AddPatchRewardsFromInfos`) and an
    :class:`~medmask.rl._module.AHMPolicyModule`. The total loss is
    ``L_pi + vf_loss_coeff * L_v - entropy_coeff * H (+ kl_coeff * KL when use_kl_loss)``;
    the paper's eq. 12 sums L_pi and L_v with equal weights (``vf_loss_coeff = 1``).
    """

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        if C.PATCH_REWARDS not in batch:
            raise ValueError(
                f"the AHM learner needs a {C.PATCH_REWARDS!r} column; add the "
                "AddPatchRewardsFromInfos learner connector (medmask.rl.ahm_appo_config does)"
            )
        dist_cls = module.get_train_action_dist_cls()
        actions = batch[Columns.ACTIONS]
        current = dist_cls.from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        behaviour = dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
        with torch.no_grad():
            old_logits = module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS]
        old = dist_cls.from_logits(old_logits)
        values = module.compute_patch_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        rewards = batch[C.PATCH_REWARDS].to(values.dtype)
        terms = ahm_patch_loss_terms(
            patch_rewards=rewards,
            patch_values=values,
            logp=current.patch_logp(actions),
            behaviour_logp=behaviour.patch_logp(actions),
            old_logp=old.patch_logp(actions),
            entropy=current.patch_entropy(),
            kl=old.patch_kl(current) if config.use_kl_loss else None,
            row_mask=batch[Columns.LOSS_MASK].float(),
            clip_param=config.clip_param,
            clip_rho=config.vtrace_clip_rho_threshold,
            clip_pg_rho=config.vtrace_clip_pg_rho_threshold,
            center_advantages=bool(config.learner_config_dict.get("center_advantages", False)),
        )
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        kl_coeff = self.curr_kl_coeffs_per_module[module_id]
        total = terms.policy_loss + config.vf_loss_coeff * terms.value_loss
        total = total - entropy_coeff * terms.entropy
        if config.use_kl_loss:
            total = total + kl_coeff * terms.kl
        row_mask = batch[Columns.LOSS_MASK].float()
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: terms.policy_loss,
                VF_LOSS_KEY: terms.value_loss,
                ENTROPY_KEY: terms.entropy,
                LEARNER_RESULTS_KL_KEY: terms.kl,
                LEARNER_RESULTS_CURR_KL_COEFF_KEY: kl_coeff,
                LEARNER_RESULTS_MEAN_IS_KEY: terms.mean_is_ratio,
                LEARNER_RESULTS_VAR_IS_KEY: terms.var_is_ratio,
                MEAN_PATCH_REWARD_KEY: _row_mean(rewards, row_mask).detach(),
                MEAN_PATCH_VALUE_KEY: _row_mean(values, row_mask).detach(),
            },
            key=module_id,
            window=1,
        )
        return total

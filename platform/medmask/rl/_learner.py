"""The AHM actor-critic loss on the ordered draw, per pick, inside RLlib's APPO learner.

Source: AHM section IV-B (one network, per-patch policy and value heads; actor-critic), with an
objective that matches the sampler (:mod:`medmask.rl._distribution`). One image is one
episode; the action is the ordered draw ``a = (i_0..i_{k-1})``, ``n_r`` random picks R first,
then the policy picks t = 0..k_pi-1 (indexed from the first policy pick below). The reward is
the reconstruction loss of the MASKED patches only, ``L_{i_t}`` for every pick (the visible
patches' outputs were never trained): the objective is

    J(z) = E_a[ sum_t L_{i_t} ]            (+ the random picks' losses, independent of z)

**Unbiased credit (``credit="to_go"``).** The score function of the ordered draw,
``grad log P(a) = sum_t grad log pi_t(i_t)`` with ``pi_t(j) = softmax_{S_t}(z)_j``, gives
``grad J = E[ sum_t grad log pi_t(i_t) * sum_m L_{i_m} ]``. Given the prefix (S_t), the
picks before t are fixed and ``E[grad log pi_t(i_t) | S_t] = 0``, so their losses drop out
(reward to go), and any baseline b_t that depends on S_t only can be subtracted::

    A_t = sum_{m >= t} L_{i_m} - (k_pi - t) * sum_{j in S_t} pi_t(j) V_j

b_t = (k_pi - t) E_{j ~ pi_t}[V_j] guesses the remaining picks' loss as k_pi - t fresh draws
from pi_t; whatever V is, E[sum_t grad log pi_t(i_t) A_t] = grad J exactly (tested by
enumerating every ordered draw of N = 6, k = 4).

**Myopic credit (``credit="myopic"``, the default).** Keep only the immediate term::

    A_t = L_{i_t} - sum_{j in S_t} pi_t(j) V_j

Given S_t its expected score term is ``sum_{j in S_t} pi_t(j) grad log pi_t(j) (L_j - b_t) =
grad_z E_{j ~ pi_t}[L_j]`` at fixed S_t: the gradient of each pick's expected loss, which
ignores that a pick removes its patch from the later picks (biased for J), with a variance of
one loss instead of a sum of k_pi - t. For additive per-patch losses every pick's own
gradient moves probability towards the hardest available patch, so its fixed point is still
the top-k set.

**Value head.** V_j predicts the loss patch j would have if masked (AHM Fig. 8's predicted
loss map), regressed ``(L_j - V_j)^2`` on every masked patch, the random share included (the
uniform picks are the unbiased part of that sample); it is a supervised target, not a return,
so no importance weights enter it.

**Importance ratios per pick** (APPO's clipping, each pick a step of one episode with the
same return): ``rho_t = pi_old(i_t|S_t) / mu(i_t|S_t)`` (pi_old APPO's target network, mu
the EnvRunner's behaviour policy) weights the advantage as V-trace does for a terminal step,
``min(rho_bar_pg, rho_t) A_t``; the surrogate is ``min(ratio_t A_t, clip(ratio_t, 1 - eps,
1 + eps) A_t)`` with ``ratio_t = clip(mu_t / pi_old_t, 0, 2) * pi_t / mu_t``. The product of
the k_pi ratios is logged (its log, ``log_rho_product``), never used. The random share has
no term anywhere in the policy loss, the ratios or the entropy.
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
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from medmask import columns as C
from medmask.rl._numerics import NonFiniteError, check_finite

CREDITS = ("myopic", "to_go")
MEAN_PICK_LOSS_KEY = "mean_pick_loss"
MEAN_PICK_VALUE_KEY = "mean_pick_value"
LOG_RHO_MEAN_KEY = "log_rho_mean"
LOG_RHO_STD_KEY = "log_rho_std"
LOG_RHO_PRODUCT_KEY = "log_rho_product"


@dataclass(frozen=True)
class PickLossTerms:
    """The scalar terms of the AHM loss (means over picks, then over counted rows)."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor
    mean_is_ratio: torch.Tensor
    var_is_ratio: torch.Tensor
    log_rho_mean: torch.Tensor
    log_rho_std: torch.Tensor
    log_rho_product: torch.Tensor


def check_credit(credit: str) -> str:
    if credit not in CREDITS:
        raise ValueError(f"policy.credit must be one of {CREDITS}, got {credit!r}")
    return credit


def pick_advantages(
    pick_losses: torch.Tensor, baselines: torch.Tensor, credit: str = "myopic"
) -> torch.Tensor:
    """A_t of the policy picks, [B, k_pi] (module docstring: myopic or reward to go).

    Args:
        pick_losses: L_{i_t} of the policy picks in draw order, [B, k_pi].
        baselines: ``sum_{j in S_t} pi_t(j) V_j`` per pick, [B, k_pi].
        credit: ``"myopic"`` or ``"to_go"``.
    """
    if check_credit(credit) == "myopic":
        return pick_losses - baselines
    k_pi = pick_losses.shape[-1]
    to_go = pick_losses.flip(-1).cumsum(-1).flip(-1)  # sum_{m >= t} L_{i_m}
    remaining = torch.arange(k_pi, 0, -1, device=pick_losses.device, dtype=pick_losses.dtype)
    return to_go - remaining * baselines


def _row_mean(per_item: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis, then over the rows where ``row_mask`` is 1."""
    if per_item.shape[-1] == 0:
        return torch.zeros((), device=per_item.device, dtype=per_item.dtype)
    rows = per_item.mean(dim=-1)
    return (rows * row_mask).sum() / row_mask.sum().clamp(min=1.0)


def ahm_pick_loss_terms(
    *,
    pick_losses: torch.Tensor,
    pick_values: torch.Tensor,
    n_random: int,
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    old_logp: torch.Tensor,
    baselines: torch.Tensor,
    entropy: torch.Tensor,
    kl: torch.Tensor | None = None,
    row_mask: torch.Tensor | None = None,
    credit: str = "myopic",
    clip_param: float = 0.4,
    clip_pg_rho: float = 1.0,
) -> PickLossTerms:
    """The AHM loss terms of one batch of ordered draws (module docstring), vectorized.

    Args:
        pick_losses: L_{i_t} of every pick in draw order (random picks first), [B, k].
        pick_values: V_{i_t} of the current network at every pick, [B, k] (gradients flow).
        n_random: n_r, the random picks at the front (excluded from the policy terms).
        logp: log pi(i_t|S_t) of the current network for the policy picks, [B, k_pi].
        behaviour_logp: log mu(i_t|S_t) of the EnvRunner policy, [B, k_pi].
        old_logp: log pi_old(i_t|S_t) of APPO's target network, [B, k_pi].
        baselines: ``sum_{j in S_t} pi_t(j) V_j`` per policy pick, [B, k_pi] (detached).
        entropy: the current policy's per-pick entropies, [B, k_pi].
        kl: per-pick KL(pi_old || pi), [B, k_pi], or None (then reported as 0).
        row_mask: [B] 1 for rows in the loss, 0 for RLlib's bootstrap rows (default: all 1).
        credit: ``"myopic"`` or ``"to_go"``.
        clip_param: APPO's surrogate clip epsilon.
        clip_pg_rho: V-trace rho-bar of the policy-gradient advantage.
    """
    mask = (
        torch.ones(pick_losses.shape[0], device=pick_losses.device)
        if row_mask is None
        else row_mask.to(pick_losses.dtype)
    )
    behaviour_logp, old_logp = behaviour_logp.detach(), old_logp.detach()
    losses = pick_losses.detach()
    advantage = pick_advantages(losses[:, n_random:], baselines.detach(), credit)
    rho = torch.exp(old_logp - behaviour_logp)
    advantage = torch.clamp(rho, max=clip_pg_rho) * advantage
    is_ratio = torch.clamp(torch.exp(behaviour_logp - old_logp), 0.0, 2.0)
    ratio = is_ratio * torch.exp(logp - behaviour_logp)
    surrogate = torch.minimum(
        advantage * ratio, advantage * torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param)
    )
    log_rho = (logp - behaviour_logp).detach()
    log_rho_mean = _row_mean(log_rho, mask)
    mean_is = _row_mean(is_ratio, mask)
    return PickLossTerms(
        policy_loss=-_row_mean(surrogate, mask),
        value_loss=_row_mean((losses - pick_values) ** 2, mask),
        entropy=_row_mean(entropy, mask),
        kl=_row_mean(kl, mask) if kl is not None else torch.zeros((), device=mask.device),
        mean_is_ratio=mean_is,
        var_is_ratio=_row_mean((is_ratio - mean_is) ** 2, mask),
        log_rho_mean=log_rho_mean,
        log_rho_std=_row_mean((log_rho - log_rho_mean) ** 2, mask).sqrt(),
        log_rho_product=(log_rho.sum(-1) * mask).sum() / mask.sum().clamp(min=1.0),
    )


class AHMLearner(APPOTorchLearner):
    """APPO's torch learner with the per-pick AHM loss (module docstring).

    Needs the ``PATCH_REWARDS`` column (the per-patch masked losses, added by
    :class:`~medmask.rl._connector.AddPatchRewardsFromInfos`) and an
    :class:`~medmask.rl._module.AHMPolicyModule`. The total loss is
    ``L_pi + vf_loss_coeff * L_v - entropy_coeff * H (+ kl_coeff * KL when use_kl_loss)``;
    ``learner_config_dict["credit"]`` picks the credit.

    A NaN/inf reward, loss or gradient raises :class:`~medmask.rl._numerics.NonFiniteError`
    from :meth:`update` (never zeroed and applied). APPO runs the updates in a learner thread,
    where an exception would kill the thread and leave ``update`` waiting forever; so the
    thread records the first error and skips that update, and the next ``update`` call (the
    algorithm's thread) raises it.
    """

    _nonfinite: NonFiniteError | None = None
    trained_images = 0  # rows (images) that went into an applied loss: the schedules' clock

    # -- schedules on trained images, not sampled env steps ----------------------------------
    # RLlib steps the lr (and entropy) schedules on NUM_ENV_STEPS_SAMPLED_LIFETIME; APPO drops
    # or reuses sampled batches, so that clock says little about how much was learned. These
    # hooks hand the schedules the count of trained images instead (an "epoch" of the paper's
    # step decay = images_per_epoch trained images); the target network keeps RLlib's clock.
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=self._schedule_clock(timesteps))

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=self._schedule_clock(timesteps))

    def _schedule_clock(self, timesteps: dict[str, Any]) -> dict[str, Any]:
        return {**(timesteps or {}), NUM_ENV_STEPS_SAMPLED_LIFETIME: self.trained_images}

    def update(self, *args: Any, **kwargs: Any) -> Any:
        self._raise_recorded()
        result = super().update(*args, **kwargs)
        self._raise_recorded()
        return result

    def _raise_recorded(self) -> None:
        if self._nonfinite is not None:
            raise self._nonfinite

    def _record(self, error: NonFiniteError) -> None:
        if self._nonfinite is None:
            self._nonfinite = error

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        if C.PATCH_REWARDS not in batch:
            raise ValueError(
                f"the AHM learner needs a {C.PATCH_REWARDS!r} column; add the "
                "AddPatchRewardsFromInfos learner connector (medmask.rl.ahm_appo_config does)"
            )
        credit = check_credit(str(config.learner_config_dict.get("credit", "myopic")))
        row_mask = batch[Columns.LOSS_MASK].float()
        rows = row_mask > 0
        rewards = batch[C.PATCH_REWARDS]
        try:
            check_finite("reward (masked-patch reconstruction loss)", rewards[rows])
        except NonFiniteError as error:
            self._record(error)
            return torch.zeros((), device=rewards.device)
        dist_cls = module.get_train_action_dist_cls()
        actions = batch[Columns.ACTIONS].long()
        current = dist_cls.from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        behaviour = dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
        with torch.no_grad():
            old = dist_cls.from_logits(
                module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS])
        n_random = current.num_random
        values = module.compute_patch_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        pick_losses = rewards.to(values.dtype).gather(1, actions)
        with torch.no_grad():
            probs = current.pick_probs(actions)
            baselines = (probs * values.detach().unsqueeze(1)).sum(dim=-1)
        terms = ahm_pick_loss_terms(
            pick_losses=pick_losses,
            pick_values=values.gather(1, actions),
            n_random=n_random,
            logp=current.pick_logp(actions),
            behaviour_logp=behaviour.pick_logp(actions),
            old_logp=old.pick_logp(actions),
            baselines=baselines,
            entropy=current.pick_entropy(actions),
            kl=old.pick_kl(current, actions) if config.use_kl_loss else None,
            row_mask=row_mask,
            credit=credit,
            clip_param=config.clip_param,
            clip_pg_rho=config.vtrace_clip_pg_rho_threshold,
        )
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        kl_coeff = self.curr_kl_coeffs_per_module[module_id]
        total = terms.policy_loss + config.vf_loss_coeff * terms.value_loss
        total = total - entropy_coeff * terms.entropy
        if config.use_kl_loss:
            total = total + kl_coeff * terms.kl
        try:
            check_finite("policy loss", terms.policy_loss)
            check_finite("value loss", terms.value_loss)
            check_finite("total loss", total)
        except NonFiniteError as error:
            self._record(error)
            return torch.zeros((), device=total.device)  # no graph: this update is skipped
        self.trained_images += int(rows.sum())
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: terms.policy_loss,
                VF_LOSS_KEY: terms.value_loss,
                ENTROPY_KEY: terms.entropy,
                LEARNER_RESULTS_KL_KEY: terms.kl,
                LEARNER_RESULTS_CURR_KL_COEFF_KEY: kl_coeff,
                LEARNER_RESULTS_MEAN_IS_KEY: terms.mean_is_ratio,
                LEARNER_RESULTS_VAR_IS_KEY: terms.var_is_ratio,
                LOG_RHO_MEAN_KEY: terms.log_rho_mean,
                LOG_RHO_STD_KEY: terms.log_rho_std,
                LOG_RHO_PRODUCT_KEY: terms.log_rho_product,
                MEAN_PICK_LOSS_KEY: _row_mean(pick_losses, row_mask).detach(),
                MEAN_PICK_VALUE_KEY: _row_mean(values.gather(1, actions), row_mask).detach(),
            },
            key=module_id,
            window=1,
        )
        return total

    def compute_gradients(self, loss_per_module: Any, **kwargs: Any) -> Any:
        """Torch gradients, then a check: a NaN/inf gradient stops the run (names it)."""
        grads = super().compute_gradients(loss_per_module, **kwargs)
        for ref, grad in grads.items():
            if grad is not None and not bool(torch.isfinite(grad).all()):
                self._record(NonFiniteError(
                    f"policy training: the gradient of {self._param_name(ref)} is not finite "
                    "(NaN/inf); stopping the run"))
                for param in self._params.values():
                    param.grad = None
                return {}  # nothing applied
        return grads

    def _param_name(self, ref: Any) -> str:
        """The parameter's dotted name (never its values: a message, not a tensor dump)."""
        param = ref if isinstance(ref, torch.Tensor) else self._params.get(ref)
        for module_id in self.module.keys():  # noqa: SIM118 (a MultiRLModule)
            for name, candidate in self.module[module_id].named_parameters():
                if candidate is param:
                    return f"{module_id}/{name}"
        return f"parameter {type(ref).__name__}"

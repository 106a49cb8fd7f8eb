"""RLlib module, learner and algorithm config for the AHM masking policy.

Public API (AHM, IEEE TMI, section IV; RLlib's APPO on the new API stack):

- :class:`MaskingPolicyNet` (plain torch, AHM Table III) and :class:`AHMPolicyModule` (its
  RLModule: per-patch policy logits and values, ``ValueFunctionAPI``, ``TargetNetworkAPI``).
- :class:`PlackettLuceMask` / :func:`mask_distribution`: the ordered fixed-count draw (random
  share first, then a Plackett-Luce draw on the logits) and its exact per-pick log-probs.
- :class:`AHMLearner` and :func:`ahm_pick_loss_terms`: the per-pick actor-critic loss
  (myopic or reward-to-go credit, derived in ``_learner``'s docstring) with one clipped
  importance ratio per pick; :class:`AddPatchRewardsFromInfos` brings the environment's
  masked-patch losses into the learner's batch; :class:`MarkAutoresetSteps` spares the
  EnvRunner the policy forward before each autoreset step.
- :class:`NonFiniteError`: a NaN/inf loss, gradient or reward stops training with its name.
- :func:`ahm_appo_config`: the APPO config from plain parameters (the paper's schedule);
  :func:`trained_policy_net` copies the learner's network out of a running algorithm.
- :func:`train_policy` (RLlib iterations under a :class:`PolicyBudget`, checkpointed, metrics
  per iteration) and :func:`policy_vs_random` (held-out masked loss, policy vs random masks);
  :func:`policy_diagnostics`: the study's numbers (oracle, position oracle, captured share,
  compactness, Spearman of V vs the oracle); :func:`train_policy_local`: the same objective
  on-policy in-process without Ray (CleanRL style, the tests' reference).
- :func:`save_policy` / :func:`load_policy`: one ``policy.pt`` (config + weights), loadable
  without RLlib; :func:`policy_digest` keys caches of runs that use a policy.
- :func:`ahm_mask` (re-exported from ``medmask.masking``), :func:`sample_policy_masks`.
"""

from medmask.rl._config import ahm_appo_config, step_decay_schedule, trained_policy_net
from medmask.rl._connector import AddPatchRewardsFromInfos, MarkAutoresetSteps
from medmask.rl._diagnostics import policy_diagnostics
from medmask.rl._distribution import PlackettLuceMask, mask_distribution
from medmask.rl._learner import (
    CREDITS,
    AHMLearner,
    PickLossTerms,
    ahm_pick_loss_terms,
    pick_advantages,
)
from medmask.rl._local import local_update, train_policy_local
from medmask.rl._module import AHMPolicyModule, MaskingPolicyNet, downsampling_stages
from medmask.rl._numerics import NonFiniteError
from medmask.rl._policy_io import load_policy, policy_digest, save_policy
from medmask.rl._sampling import ahm_mask, sample_policy_masks
from medmask.rl._train import (
    ALGO_DIR,
    ENV_STEPS,
    REWARD,
    SPS,
    UPDATES,
    PolicyBudget,
    iteration_metrics,
    policy_vs_random,
    train_policy,
)

__all__ = [
    "ALGO_DIR",
    "CREDITS",
    "NonFiniteError",
    "PickLossTerms",
    "PlackettLuceMask",
    "ahm_pick_loss_terms",
    "local_update",
    "mask_distribution",
    "policy_diagnostics",
    "train_policy_local",
    "pick_advantages",
    "ENV_STEPS",
    "REWARD",
    "SPS",
    "UPDATES",
    "PolicyBudget",
    "iteration_metrics",
    "policy_vs_random",
    "train_policy",
    "AHMLearner",
    "AHMPolicyModule",
    "AddPatchRewardsFromInfos",
    "MarkAutoresetSteps",
    "MaskingPolicyNet",
    "ahm_appo_config",
    "ahm_mask",
    "downsampling_stages",
    "load_policy",
    "policy_digest",
    "sample_policy_masks",
    "save_policy",
    "step_decay_schedule",
    "trained_policy_net",
]

"""RLlib module, learner and algorithm config for the AHM masking policy.

Public API (AHM, IEEE TMI, section IV; RLlib's APPO on the new API stack):

- :class:`MaskingPolicyNet` (plain torch, AHM Table III) and :class:`AHMPolicyModule` (its
  RLModule: per-patch policy logits and values, ``ValueFunctionAPI``, ``TargetNetworkAPI``).
- :class:`PatchBernoulli` / :func:`patch_distribution`: independent per-patch Bernoulli
  log-probs with AHM's fixed-count sampler (its docstring says how the two relate).
- :class:`AHMLearner` and :func:`ahm_patch_loss_terms`: the per-patch loss of eq. 8-12 with
  one clipped importance ratio per patch; :class:`AddPatchRewardsFromInfos` brings the
  environment's per-patch rewards into the learner's batch.
- :func:`ahm_appo_config`: the APPO config from plain parameters (the paper's schedule);
  :func:`trained_policy_net` copies the learner's network out of a running algorithm.
- :func:`train_policy` (RLlib iterations under a :class:`PolicyBudget`, checkpointed, metrics
  per iteration) and :func:`policy_vs_random` (held-out masked loss, policy vs random masks).
- :func:`save_policy` / :func:`load_policy`: one ``policy.pt`` (config + weights), loadable
  without RLlib; :func:`policy_digest` keys caches of runs that use a policy.
- :func:`ahm_mask` (re-exported from ``medmask.masking``), :func:`sample_policy_masks`.
"""

from medmask.rl._config import ahm_appo_config, step_decay_schedule, trained_policy_net
from medmask.rl._connector import AddPatchRewardsFromInfos
from medmask.rl._distribution import PatchBernoulli, patch_distribution
from medmask.rl._learner import AHMLearner, PatchLossTerms, ahm_patch_loss_terms
from medmask.rl._module import AHMPolicyModule, MaskingPolicyNet, downsampling_stages
from medmask.rl._policy_io import load_policy, policy_digest, save_policy
from medmask.rl._sampling import ahm_mask, sample_policy_masks
from medmask.rl._train import (
    ALGO_DIR,
    ENV_STEPS,
    REWARD,
    SPS,
    PolicyBudget,
    iteration_metrics,
    policy_vs_random,
    train_policy,
)

__all__ = [
    "ALGO_DIR",
    "ENV_STEPS",
    "REWARD",
    "SPS",
    "PolicyBudget",
    "iteration_metrics",
    "policy_vs_random",
    "train_policy",
    "AHMLearner",
    "AHMPolicyModule",
    "AddPatchRewardsFromInfos",
    "MaskingPolicyNet",
    "PatchBernoulli",
    "PatchLossTerms",
    "ahm_appo_config",
    "ahm_mask",
    "ahm_patch_loss_terms",
    "downsampling_stages",
    "load_policy",
    "patch_distribution",
    "policy_digest",
    "sample_policy_masks",
    "save_policy",
    "step_decay_schedule",
    "trained_policy_net",
]

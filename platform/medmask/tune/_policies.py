"""AHM trials without a hand-given policy: the sweep trains their masking policies first.

An AHM trial masks with a policy trained against a frozen reconstruction network (AHM, IEEE
TMI, Sec. IV). Where ``sweep.strategies.ahm.policy_checkpoint`` is not given, the driver
prepares one policy per *reconstruction network* before any trial starts:

1. the network is the trial's own model pretrained with random masks at the same seed,
   ratio, data and patch grid (:func:`~medmask.tune.policy_reconstruction`): the public
   pretraining stage, so the sweep's random-mask trial of that seed reuses it (stage cache);
2. the policy is trained through the public policy stage
   (:func:`medmask.train.run_policy_training`, as ``experiments/ahm.py`` does), cached as
   ``<cache_dir>/policy/<hash>/policy.pt``.

One policy per seed (not one per sweep): a seed replicates the whole AHM pipeline, reward
network and policy included, so the spread over seeds holds the policy's own variance, as the
AHM study's ``seeds=[0,1,2]`` does. Both are stage runs under the study run; the trials find
their policy by :func:`~medmask.tune.policy_slot`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medmask import columns as C
from medmask.preprocess import study_splits
from medmask.tracking import run_name
from medmask.train import (
    MimSettings,
    PolicySettings,
    dataset_images,
    run_policy_training,
    run_pretraining,
)
from medmask.tune._space import (
    SweepSpec,
    grid_points,
    needs_policy,
    policy_reconstruction,
    policy_slot,
    trial_settings,
)

log = logging.getLogger(__name__)

POLICIES_FILE = "ahm_policies.json"  # on the study run: slot -> policy.pt


def policy_reconstructions(base: MimSettings, spec: SweepSpec) -> dict[str, MimSettings]:
    """The reconstruction networks the sweep's AHM trials need a policy for (those without a
    ``policy_checkpoint``), by :func:`policy_slot`, in grid order."""
    needed: dict[str, MimSettings] = {}
    for point in grid_points(spec):
        settings = trial_settings(base, point, spec.strategies, spec.methods,
                                  require_policy=False)
        if needs_policy(settings):
            needed.setdefault(policy_slot(settings), policy_reconstruction(settings))
    return needed


def prepare_policies(base: MimSettings, spec: SweepSpec, policy: PolicySettings | None,
                     tracker: Any, study: Any) -> dict[str, str]:
    """Train (or reuse from the stage cache) every policy the sweep's AHM trials lack;
    returns ``{slot: policy.pt}`` for :func:`~medmask.tune.trial_settings`.

    Raises:
        ValueError: AHM trials lack a policy and no ``policy`` settings were given.
    """
    needed = policy_reconstructions(base, spec)
    if not needed:
        return {}
    if policy is None:
        raise ValueError(f"sweep {spec.name}: {len(needed)} AHM reconstruction network(s) "
                         "need a policy: give the policy settings (configs/rl) or "
                         "sweep.strategies.ahm.policy_checkpoint=PATH")
    log.info("sweep %s: preparing %d AHM polic(ies) before the trials", spec.name, len(needed))
    paths = {slot: str(train_policy_for(reconstruction, policy, spec.trial, tracker, study))
             for slot, reconstruction in needed.items()}
    study.log_dict(paths, POLICIES_FILE)
    return paths


def train_policy_for(reconstruction: MimSettings, policy: PolicySettings, trial_kind: str,
                     tracker: Any, study: Any) -> Path:
    """Pretrain (cached) the reconstruction network of one seed and train (cached) its
    policy, as two stage runs of ``study``; returns the ``policy.pt``."""
    seed, ratio = reconstruction.seed, float(reconstruction.masking.ratio)
    splits = {k: v.materialize() for k, v in study_splits(reconstruction.data, seed).items()}
    tags = {"strategy": "ahm", "ratio": ratio, "seed": seed,
            "dataset": reconstruction.data["name"], "model": reconstruction.model.name}
    name = run_name("ahm", ratio=ratio, seed=seed)
    with tracker.stage(f"reconstruction-{name}", parent=study,
                       tags={**tags, "strategy": "random"}) as stage:
        start = time.perf_counter()
        checkpoint = run_pretraining(reconstruction.pretraining(),
                                     pretraining_splits(splits, trial_kind), stage,
                                     reconstruction.scaling)
        stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
    heldout = splits.get("val", splits["test"])  # the test split stays the trials'
    with tracker.stage(f"policy-{name}", parent=study, tags=tags) as stage:
        start = time.perf_counter()
        folder, _ = run_policy_training(
            policy, ratio, seed, reconstruction.cache_dir, reconstruction.pretraining(),
            checkpoint, dataset_images(splits["train"], policy.pool_images, seed),
            dataset_images(heldout, policy.eval_images, seed), stage)
        stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
    return folder / "policy.pt"


def pretraining_splits(splits: Mapping[str, Any], trial_kind: str) -> dict[str, Any]:
    """What the trials' pretraining sees, so the reconstruction network is theirs: the
    training split (grounding trials) or the pool and the training split (MIM trials)."""
    keep = ("train",) if trial_kind == "grounding" else ("train", C.POOL)
    return {k: v for k, v in splits.items() if k in keep}

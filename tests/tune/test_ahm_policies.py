"""A sweep's AHM trials without a policy_checkpoint: the driver trains the policy first (public
pretraining and policy stages, on the session's Ray), against the sweep's own model pretrained
with random masks at the trial's seed, at that model's patch grid; a second call reuses both
from the stage cache, and the AHM trial's masks then build from the policy it was given."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import medmask.rl as rl
from medmask.models import create_model
from medmask.tracking import Tracker
from medmask.train import (
    PolicySettings,
    StageCache,
    build_mask_strategy,
    load_reconstruction,
    pretrain_settings,
    settings_from_dict,
)
from medmask.tune import SweepSpec, prepare_policies, trial_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import STRATEGIES, tiny_settings  # noqa: E402

# the smallest real APPO run: one EnvRunner, two iterations, a few held-out images
TINY_POLICY = {"num_env_runners": 1, "num_envs_per_env_runner": 2, "train_batch_size": 4,
               "channels": 4, "head_depth": 1, "min_time_s_per_iteration": 0.1,
               "eval_images": 8, "pool_images": 16, "reward_server": "off",
               "budget": {"max_iterations": 2, "checkpoint_every": 0}}


@pytest.mark.slow
@pytest.mark.e2e
def test_sweep_trains_each_seeds_policy_on_its_random_mask_vit_once(tmp_path, ray_session,
                                                                     mlflow_uri):
    base = tiny_settings(tmp_path)  # the tiny ViT: 64 px, 8-px patches
    strategies = {**STRATEGIES, "ahm": {"random_share": 0.3}}  # no policy_checkpoint
    spec = SweepSpec(name="ahm-policy-test", space={"strategy": ["random", "ahm"], "seed": [0]},
                     strategies=strategies, metric="grounding_score", trial="grounding")
    policy = settings_from_dict(PolicySettings, TINY_POLICY)
    tracker = Tracker(mlflow_uri, "ahm-policy-sweep")
    with tracker.study("study") as study:
        first = prepare_policies(base, spec, policy, tracker, study)
        again = prepare_policies(base, spec, policy, tracker, study)
    assert len(first) == 1 and again == first  # one seed -> one policy, reused
    path = Path(next(iter(first.values())))
    assert path.is_file() and path.is_relative_to(Path(base.cache_dir) / "policy")

    # the reconstruction network is the random trial's own encoder (the pretraining cache)
    random_trial = trial_settings(base, {"strategy": "random", "seed": 0}, strategies)
    encoder = StageCache(base.cache_dir, "pretrain").lookup(
        pretrain_settings(random_trial.pretraining()))
    assert encoder is not None
    vit = create_model(base.model.name, **base.model.params)
    assert load_reconstruction(str(encoder)).grid == vit.grid
    assert rl.load_policy(path).grid == vit.grid  # the ViT's patch grid, not a count layout

    client = MlflowClient(mlflow_uri)
    stages = client.search_runs([client.get_experiment_by_name("ahm-policy-sweep")
                                 .experiment_id], "tags.`medmask.kind` = 'stage'",
                                order_by=["attributes.start_time ASC"])
    hits = [(r.info.run_name, r.data.tags.get("cache_hit")) for r in stages]
    assert hits == [("reconstruction-ahm-r0.75-s0", "False"), ("policy-ahm-r0.75-s0", "False"),
                    ("reconstruction-ahm-r0.75-s0", "True"), ("policy-ahm-r0.75-s0", "True")]
    assert all(r.data.tags.get("mlflow.parentRunId") == study.run_id for r in stages)

    # the AHM trial takes that policy; without it, it still fails naming the checkpoint
    ahm_trial = trial_settings(base, {"strategy": "ahm", "seed": 0}, strategies, policies=first)
    assert ahm_trial.masking.params["policy_checkpoint"] == str(path)
    strategy = build_mask_strategy(dataclasses.asdict(ahm_trial.masking))
    mask = strategy({"image": torch.rand(3, 64, 64)}, vit.grid, 0.75,
                    generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, vit.grid.num_patches) and (mask.sum(1) == 48).all()
    with pytest.raises(ValueError, match="policy_checkpoint"):
        trial_settings(base, {"strategy": "ahm", "seed": 0}, strategies)

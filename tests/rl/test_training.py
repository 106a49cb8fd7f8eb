"""One real RLlib run: APPO with 2 EnvRunners on the AHM environment, a few iterations."""

from __future__ import annotations

import math
import time

import pytest

import envs
from medmask import columns as C
from medmask.data import phantom
from medmask.masking import create_mask_strategy
from medmask.models import create_model
from medmask.rl import MaskingPolicyNet, ahm_appo_config, trained_policy_net

LEARNER_KEYS = ("policy_loss", "vf_loss", "entropy", "mean_patch_reward")


@pytest.mark.slow
@pytest.mark.e2e
def test_appo_trains_the_masking_policy_with_two_env_runners(ray_session: None) -> None:
    env_config = {
        "reconstruction": create_model("unet_tiny", img_size=32, patch_size=8),  # 16 patches
        "images": phantom.generate(32, 32, seed=0)[C.IMAGE],
    }
    config = ahm_appo_config(
        envs.ENV_ID, env_config, num_env_runners=2, num_envs_per_env_runner=4,
        num_cpus_per_env_runner=0.5, train_batch_size=8, channels=4,
        min_time_s_per_iteration=0.2, images_per_epoch=32, seed=0,
    )
    algo = config.build_algo()
    try:
        updates, times = [], []
        for _ in range(40):  # asynchronous: the first iterations may see no samples yet
            start = time.perf_counter()
            result = algo.train()
            times.append(time.perf_counter() - start)
            learner = result.get("learners", {}).get("default_policy", {})
            if all(k in learner and math.isfinite(learner[k]) for k in LEARNER_KEYS):
                updates.append((learner, result["env_runners"]))
            if len(updates) >= 3:
                break
        net = trained_policy_net(algo)
    finally:
        algo.stop()
    assert len(updates) >= 3, f"only {len(updates)} iterations with learner updates in {times}"
    for learner, runners in updates:
        assert learner["entropy"] > 0 and learner["vf_loss"] >= 0
        assert 0 < learner["mean_patch_reward"] < 1  # a mean squared error of [0, 1] images
        assert math.isfinite(runners["episode_return_mean"])
        assert runners["episode_len_mean"] == 1  # single-step episodes
    sampled = updates[-1][1]["num_env_steps_sampled_lifetime"]
    assert sampled >= 3 * 8
    # The learner's network leaves the algorithm as a plain module the ahm strategy can use.
    assert isinstance(net, MaskingPolicyNet) and not net.training
    images = env_config["images"][:4]
    mask = create_mask_strategy("ahm", policy=net)({"image": images}, net.grid, 0.75)
    assert (mask.sum(dim=1) == 12).all()
    print(f"iteration times (s): {[round(t, 2) for t in times]}; env steps: {sampled}")

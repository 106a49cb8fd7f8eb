"""A real RLlib EnvRunner on the AHM vector env: one policy forward per masking decision."""

from __future__ import annotations

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

import envs
from medmask import columns as C
from medmask.data import phantom
from medmask.rl import ahm_appo_config
from tests.envs.reconstruction import TinyReconstruction


def test_env_runner_skips_the_policy_before_autoreset_steps() -> None:
    images = phantom.generate(12, 32, seed=0)[C.IMAGE]
    config = ahm_appo_config(envs.ENV_ID, {"reconstruction": TinyReconstruction(),  # k = 12 of 16
                                           "images": images},
                             num_env_runners=0, num_envs_per_env_runner=3, channels=4, seed=0)
    runner = SingleAgentEnvRunner(config=config)
    module = runner.module
    assert not module.training  # inference-only: no train/eval switching per forward
    rows: list[int] = []
    forward = module.net.masking_logits

    def counting(obs: torch.Tensor) -> torch.Tensor:
        rows.append(len(obs))
        return forward(obs)

    module.net.masking_logits = counting
    episodes = runner.sample(num_timesteps=6, random_actions=False)
    runner.stop()
    # 2 decisions x 3 envs, each preceded by one forward; the 2 autoreset steps ran none
    assert sum(rows) == 6 and rows == [3, 3]
    assert runner.env.unwrapped.core.reward.model.images_seen == 6  # the env's own copy
    assert len(episodes) == 6 and all(len(e) == 1 and e.is_terminated for e in episodes)
    for episode in episodes:
        action = np.asarray(episode.get_actions(0))
        assert action.shape == (12,) and len(set(action.tolist())) == 12
        logits = episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS, 0)
        assert np.isfinite(logits).all() and logits.shape == (16,)
        patch = np.asarray(episode.get_infos(1)[C.PATCH_REWARDS])
        assert (patch[action] > 0).all()
        assert np.isclose(patch.sum() / 12, episode.get_rewards(0))

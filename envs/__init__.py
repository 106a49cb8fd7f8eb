"""Gymnasium environments of medmask, registered on import.

- ``medmask/AHMMasking-v0`` (:mod:`envs.ahm_masking`): the AHM masking decision, registered as
  a Gymnasium id (``gym.make`` / ``gym.make_vec``, whose vector entry point batches the reward
  network) and as an RLlib env (``config.environment(ENV_ID, env_config={...})``).
- :func:`start_reward_server` (:mod:`envs.reward_server`): one shared reward actor (on a GPU
  when there is one) scoring every EnvRunner's masks in batches.
"""

import gymnasium as gym
from ray.tune.registry import register_env

from envs.ahm_masking import (
    ENV_ID,
    AHMMaskingEnv,
    AHMMaskingVectorEnv,
    ImagePool,
    ReconstructionReward,
    make_rllib_env,
)
from envs.reward_server import RemoteReward, RewardServer, start_reward_server

if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="envs.ahm_masking:AHMMaskingEnv",
        vector_entry_point="envs.ahm_masking:AHMMaskingVectorEnv",
        disable_env_checker=True,  # checked once in the tests, not on every construction
    )
register_env(ENV_ID, make_rllib_env)

__all__ = [
    "ENV_ID",
    "AHMMaskingEnv",
    "AHMMaskingVectorEnv",
    "ImagePool",
    "ReconstructionReward",
    "make_rllib_env",
    "RemoteReward",
    "RewardServer",
    "start_reward_server",
]

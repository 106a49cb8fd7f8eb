"""The shared reward actor: one network, requests from several EnvRunners in one forward."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from envs import AHMMaskingVectorEnv, ReconstructionReward, start_reward_server
from medmask import columns as C
from medmask.data import phantom
from tests.envs.reconstruction import TinyReconstruction


@ray.remote(num_cpus=0)
class _EnvRunnerLike:
    """An actor stepping its own vector env whose reward is the shared server."""

    def __init__(self, client, images, seed: int) -> None:
        self.env = AHMMaskingVectorEnv(4, client, images, mask_ratio=0.5)
        self.env.reset(seed=seed)
        self.rng = np.random.default_rng(seed)

    def step(self) -> np.ndarray:
        k, n = self.env.single_action_space.shape[0], int(self.env.single_action_space.nvec[0])
        actions = np.stack([self.rng.permutation(n)[:k] for _ in range(4)])
        _, rewards, *_ = self.env.step(actions)
        return rewards


@pytest.mark.e2e
def test_the_server_batches_concurrent_requests_and_returns_the_networks_losses(
        ray_session) -> None:
    images = phantom.generate(8, 32, seed=3)[C.IMAGE][:, None].astype(np.float32)
    rng = np.random.default_rng(0)
    masks = rng.random((8, 16)) < 0.5
    local = ReconstructionReward(TinyReconstruction(32, 8))
    server = start_reward_server(lambda: TinyReconstruction(32, 8), wait_s=0.5)
    try:
        first = server.actor.score.remote(images[:4], masks[:4], "a")
        second = server.actor.score.remote(images[4:], masks[4:], "b")  # within wait_s
        losses = np.concatenate(ray.get([first, second]))
        stats = server.stats()
        assert stats["calls"] == 2 and stats["forwards"] == 1 and stats["images"] == 8
        np.testing.assert_allclose(losses, local(images, masks), rtol=1e-6, atol=1e-7)
        assert server.client.grid == local.grid
    finally:
        server.stop()


@pytest.mark.e2e
def test_two_env_runners_share_one_server(ray_session) -> None:
    images = phantom.generate(16, 32, seed=3)[C.IMAGE]
    server = start_reward_server(lambda: TinyReconstruction(32, 8), wait_s=0.05)
    try:
        runners = [_EnvRunnerLike.remote(server.client, images, seed) for seed in (0, 1)]
        rewards = ray.get([r.step.remote() for r in runners for _ in range(3)])
        assert all(np.isfinite(r).all() and (r >= 0).all() for r in rewards)
        assert np.concatenate(rewards).max() > 0
        stats = server.stats()  # (a step after an episode's end resets: no request)
        assert len(stats["callers"]) == 2 and stats["images"] == 4 * stats["calls"]
        assert 2 <= stats["forwards"] <= stats["calls"] <= 6
    finally:
        server.stop()

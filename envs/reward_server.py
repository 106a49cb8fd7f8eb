"""One shared reward actor serving every EnvRunner's masks in batches (the GPU path of AHM).

Each EnvRunner of the policy stage otherwise holds its own copy of the frozen reconstruction
network and runs it on its own CPU. With a :class:`RewardServer` the network lives once, in
one Ray actor (on a GPU when the cluster has one): the EnvRunners' environments send their
images and masks through a :class:`RemoteReward` (the same call signature as
:class:`~envs.ahm_masking.ReconstructionReward`), the actor gathers the requests that arrive
within ``wait_s`` of the first one (up to ``max_batch`` images) and scores them in ONE
forward. The numbers are the network's own: the per-image losses do not depend on which
requests share a forward (up to the floating-point order of a batched kernel).

    server = start_reward_server(factory, num_gpus=1)   # factory: () -> the frozen network
    env_config = {"reconstruction": server.client, ...}  # picklable: ships to EnvRunners
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from envs.ahm_masking import ReconstructionReward
from medmask.masking import PatchGrid


class RewardServer:
    """The Ray actor: the frozen network and a batching queue (an asyncio actor).

    Args:
        reconstruction: the network, or a zero-argument callable building it.
        device: ``"auto"`` = CUDA when the actor was given a GPU, else the CPU.
        max_batch: at most this many images per forward.
        wait_s: how long the first request of a batch waits for others to join it.
    """

    def __init__(self, reconstruction: Any, device: str = "auto", max_batch: int = 256,
                 wait_s: float = 0.005) -> None:
        self.reward = ReconstructionReward(reconstruction, device)
        self.max_batch, self.wait_s = int(max_batch), float(wait_s)
        self.pending: list[tuple[np.ndarray, np.ndarray, str, asyncio.Future]] = []
        self.calls = self.forwards = self.images = 0
        self.callers: set[str] = set()

    def grid(self) -> PatchGrid:
        return self.reward.grid

    def device(self) -> str:
        return str(self.reward.device)

    async def score(self, images: np.ndarray, masks: np.ndarray, caller: str = "") -> np.ndarray:
        """Per-patch losses [B, N] of images [B, C, H, W] under bool masks [B, N]."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append((np.asarray(images), np.asarray(masks), caller, future))
        if len(self.pending) == 1:
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(self.wait_s)  # let the other EnvRunners' requests join
        while self.pending:
            batch, size = [], 0
            while self.pending and (not batch or size + len(self.pending[0][0])
                                    <= self.max_batch):
                item = self.pending.pop(0)
                batch.append(item)
                size += len(item[0])
            try:
                losses = self.reward(np.concatenate([b[0] for b in batch]),
                                     np.concatenate([b[1] for b in batch]))
            except Exception as error:  # every waiting EnvRunner sees the network's error
                for *_, future in batch:
                    future.set_exception(error)
                continue
            self.forwards += 1
            self.calls += len(batch)
            self.images += size
            start = 0
            for images, _, caller, future in batch:
                self.callers.add(caller)
                future.set_result(losses[start:start + len(images)])
                start += len(images)

    def stats(self) -> dict[str, Any]:
        """Requests served, forwards run, images scored and the distinct callers."""
        return {"calls": self.calls, "forwards": self.forwards, "images": self.images,
                "callers": sorted(self.callers)}


@dataclass(frozen=True)
class RemoteReward:
    """The EnvRunners' side: ``reward(images, masks) -> losses`` through the shared actor
    (picklable: an actor handle and the patch grid)."""

    actor: Any
    grid: PatchGrid

    def __call__(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        caller = ray.get_runtime_context().get_worker_id()
        return ray.get(self.actor.score.remote(images, masks, caller))


@dataclass(frozen=True)
class RewardService:
    """A started :class:`RewardServer`: its handle, the client to ship, and its end."""

    actor: Any
    client: RemoteReward

    def stats(self) -> dict[str, Any]:
        return ray.get(self.actor.stats.remote())

    def stop(self) -> None:
        ray.kill(self.actor)


def start_reward_server(reconstruction: torch.nn.Module | Callable[[], torch.nn.Module], *,
                        num_gpus: float = 0, num_cpus: float = 0, max_batch: int = 256,
                        wait_s: float = 0.005) -> RewardService:
    """Start the shared reward actor (``num_gpus`` = 1 puts the network on a GPU) and wait
    until its network is built (a failing factory raises here, not in an EnvRunner)."""
    actor = ray.remote(RewardServer).options(
        num_gpus=num_gpus, num_cpus=num_cpus, max_concurrency=1000).remote(
        reconstruction, "auto", max_batch, wait_s)
    return RewardService(actor, RemoteReward(actor, ray.get(actor.grid.remote())))

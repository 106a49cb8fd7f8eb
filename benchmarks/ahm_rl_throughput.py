"""AHM's RL loop throughput vs the bare batched reconstruction forward on the same images.

The reward of every masking decision is one reconstruction forward (AHM eq. 7), so the bare
batched forward of the frozen network is the ceiling of the RL loop. Three measurements on the
same model, images and batch (one thread by default, interleaved rounds):

- ``bare``: ``reconstruction(images, random_masks)`` on batches of ``--batch`` images;
- ``loop``: the RL loop without RLlib's bookkeeping: the batched vector env (reset, step),
  the policy forward (no grad, as RLlib's) and the fixed-count AHM sampler, the per-patch
  rewards back;
- ``rllib``: a real RLlib ``SingleAgentEnvRunner`` (connectors, episodes, the AHM RLModule)
  sampling the same vector env: what an APPO EnvRunner delivers. Built once, sampled every
  round.

Each round times the three on the same 256 images by wall and by CPU time (this process's;
steadier on a machine shared with other jobs); a ratio is the median over rounds of the
round's own ratio. Targets: ``loop / bare >= 0.5``; a real RLlib EnvRunner
``rllib / bare >= 0.8`` (raised when 0.72 was measured).

Measured 2026-12-05 (unet_tiny 64 px, batch 16, 7 rounds, idle 2-core machine, load average
0.9-1.7; CPU and wall agree there): ``rllib / bare`` 0.58-0.60 before the changes below, 0.73-0.75
after (``loop / bare`` 0.79-0.83), still short of 0.8. cProfile of ``runner.sample`` (3 x 256
images, load 0.8), seconds before -> after (share of the total after): total 3.51 -> 2.65;
reward forward 1.99 -> 1.90 (71.5 %); policy forward 1.02 -> 0.38 (14.2 %); RLlib's GetActions
(draw + log-prob) 0.14 -> 0.06 (2.4 %); other module-to-env connectors 0.10 -> 0.05 (2.0 %);
env-to-module 0.05 -> 0.06 (2.1 %); episodes, runner loop, metrics 0.18 -> 0.17 (6.4 %); the
env besides its forward 0.04 -> 0.04 (1.3 %). What changed:

- RLlib's EnvRunner ran the policy before both steps of every single-decision episode; the
  second is gymnasium's NEXT_STEP autoreset, which ignores the action.
  ``medmask.rl.MarkAutoresetSteps`` (env-to-module) marks those rows and the module skips them
  (placeholder actions, so ``GetActions`` draws nothing either);
- the EnvRunner's inference-only module stays in eval mode (RLlib switched the ~50 submodules
  to eval and back on every forward: 2.2 %);
- ``normalize_actions=False, clip_actions=False`` (RLlib copied the patch indices every step to
  unsquash nothing);
- the policy network in channels-last (the full-resolution input layer's oneDNN kernels:
  11.6 -> 8.6 ms per batch of 16).

What is left: the policy forward costs 0.2 of the reward forward (AHM Table III's network
at full resolution), which alone caps the ratio at 0.83, and RLlib's per-step bookkeeping
(connectors and episodes, about 13 %). glibc's malloc also hands the activations' pages back
to the OS after each forward here (a quarter of the run is system time): with
``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000`` the bare forward runs
547 instead of ~370 images/s and the EnvRunner 414 instead of ~280 (ratio 0.73, base 0.64).

Usage::

    python benchmarks/ahm_rl_throughput.py                    # unet_tiny at 64 px, batch 16
    python benchmarks/ahm_rl_throughput.py --size 32 --batch 32 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]

import envs  # noqa: E402
from envs.ahm_masking import AHMMaskingVectorEnv  # noqa: E402
from medmask import columns as C  # noqa: E402
from medmask.data import phantom  # noqa: E402
from medmask.masking import ahm_draw, random_mask  # noqa: E402
from medmask.models import create_model  # noqa: E402
from medmask.rl import MaskingPolicyNet  # noqa: E402


class Clock:
    """Wall and CPU time (this process, all threads) of a block: on a machine shared with other
    jobs, CPU seconds say what the work costs; wall seconds also count the waits."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def bare_forward(model: torch.nn.Module, images: np.ndarray, batch: int) -> Clock:
    """The batched reconstruction forward under random masks over ``images``."""
    x = torch.as_tensor(images[:, None])
    generator = torch.Generator().manual_seed(0)
    with Clock() as clock, torch.inference_mode():
        for lo in range(0, len(x), batch):
            chunk = x[lo:lo + batch]
            model(chunk, random_mask(len(chunk), model.grid, 0.75, generator=generator))
    return clock


def rl_loop(model: torch.nn.Module, policy: MaskingPolicyNet, images: np.ndarray,
            batch: int) -> Clock:
    """Vector env + policy + sampler + per-patch rewards over ``len(images)`` decisions."""
    env = AHMMaskingVectorEnv(batch, model, images)
    obs, _ = env.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    with Clock() as clock:
        for _ in range(len(images) // batch):
            with torch.no_grad():
                logits = policy.masking_logits(torch.as_tensor(obs))
            draws = ahm_draw(logits, env.core.count, 0.3, generator).numpy()  # ordered picks
            obs, rewards, *_ = env.step(draws)  # scores the batch
            obs, *_ = env.step(draws)  # NEXT_STEP autoreset: new images
    return clock


def rllib_runner(model: torch.nn.Module, images: np.ndarray, batch: int) -> Any:
    """A real RLlib EnvRunner on the AHM vector env (built once, sampled every round)."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from medmask.rl import ahm_appo_config

    config = ahm_appo_config(envs.ENV_ID, {"reconstruction": model, "images": images},
                             num_env_runners=0, num_envs_per_env_runner=batch, channels=16)
    runner = SingleAgentEnvRunner(config=config)
    runner.sample(num_timesteps=2 * batch, random_actions=False)  # warm-up
    return runner


def rllib_sample(runner: Any, images: int) -> Clock:
    """``runner.sample`` of ``images`` env steps (one image per decision)."""
    with Clock() as clock:
        episodes = runner.sample(num_timesteps=images, random_actions=False)
    if sum(len(e) for e in episodes) != images:
        raise RuntimeError(f"the runner sampled {sum(len(e) for e in episodes)} steps, "
                           f"not {images}")
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-rllib", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    torch.manual_seed(0)
    model = create_model("unet_tiny", img_size=args.size, patch_size=args.patch).eval()
    policy = MaskingPolicyNet(1, model.grid, channels=16).eval()
    images = phantom.generate(args.images, args.size, seed=0)[C.IMAGE].astype(np.float32)
    clocks: dict[str, list[Clock]] = {"bare": [], "loop": [], "rllib": []}
    bare_forward(model, images[: 2 * args.batch], args.batch)  # warm-up (allocator, kernels)
    rl_loop(model, policy, images[: 2 * args.batch], args.batch)
    runner = None if args.no_rllib else rllib_runner(model, images, args.batch)
    for _ in range(args.rounds):  # interleaved: machine noise hits all alike
        clocks["bare"].append(bare_forward(model, images, args.batch))
        clocks["loop"].append(rl_loop(model, policy, images, args.batch))
        if runner is not None:
            clocks["rllib"].append(rllib_sample(runner, len(images)))
    if runner is not None:
        runner.stop()
    clocks = {k: v for k, v in clocks.items() if v}
    print(f"unet_tiny {args.size} px, patch {args.patch} ({model.grid.num_patches} patches), "
          f"batch {args.batch}, {args.images} images, {args.threads} thread(s), "
          f"{args.rounds} rounds; load average {os.getloadavg()[0]:.2f}")
    print("  (median images/s by wall and by CPU time; ratio: median over rounds of the "
          "round's own ratio to bare)")
    for name, values in clocks.items():
        wall = statistics.median(args.images / c.wall for c in values)
        cpu = statistics.median(args.images / c.cpu for c in values)
        by_wall, by_cpu = round_ratio(clocks, name, "wall"), round_ratio(clocks, name, "cpu")
        print(f"  {name:6s} wall {wall:7.1f} images/s (ratio {by_wall:.2f})   "
              f"CPU {cpu:7.1f} images/s (ratio {by_cpu:.2f})")
    for name, target, what in (("loop", 0.5, "RL loop"), ("rllib", 0.8, "RLlib EnvRunner")):
        if name in clocks:
            print(f"{what} / bare forward (CPU time): {round_ratio(clocks, name, 'cpu'):.2f} "
                  f"(target >= {target:.2f})")


def round_ratio(clocks: dict[str, list[Clock]], name: str, kind: str) -> float:
    """Median over rounds of bare seconds / ``name`` seconds (same images: a speed ratio)."""
    pairs = zip(clocks["bare"], clocks[name], strict=True)
    return statistics.median(getattr(b, kind) / getattr(c, kind) for b, c in pairs)

if __name__ == "__main__":
    main()

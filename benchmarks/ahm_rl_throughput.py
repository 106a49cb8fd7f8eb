"""AHM's RL loop throughput vs the bare batched reconstruction forward on the same images.

The reward of every masking decision is one reconstruction forward (AHM eq. 7), so the bare
batched forward of the frozen network is the ceiling of the RL loop. Three measurements on the
same model, images and batch (one thread by default, interleaved rounds, medians):

- ``bare``: ``reconstruction(images, random_masks)`` on batches of ``--batch`` images;
- ``loop``: the RL loop without RLlib's bookkeeping: the batched vector env (reset, step),
  the policy forward and the fixed-count AHM sampler, the per-patch rewards back;
- ``rllib``: a real RLlib ``SingleAgentEnvRunner`` (connectors, episodes, the AHM RLModule)
  sampling the same vector env: what an APPO EnvRunner delivers.

Targets: ``loop / bare >= 0.5``; a real RLlib EnvRunner ``rllib / bare >= 0.8`` (raised when
0.72 was measured). Usage::

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


def bare_forward(model: torch.nn.Module, images: np.ndarray, batch: int) -> float:
    """Images per second of the batched reconstruction forward under random masks."""
    x = torch.as_tensor(images[:, None])
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(x), batch):
            chunk = x[lo:lo + batch]
            model(chunk, random_mask(len(chunk), model.grid, 0.75, generator=generator))
    return len(x) / (time.perf_counter() - start)


def rl_loop(model: torch.nn.Module, policy: MaskingPolicyNet, images: np.ndarray,
            batch: int) -> float:
    """Images per second through vector env + policy + sampler + per-patch rewards."""
    env = AHMMaskingVectorEnv(batch, model, images)
    obs, _ = env.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    decisions = len(images) // batch
    start = time.perf_counter()
    for _ in range(decisions):
        logits = policy.masking_logits(torch.as_tensor(obs)).detach()
        draws = ahm_draw(logits, env.core.count, 0.3, generator).numpy()  # ordered picks
        obs, rewards, *_ = env.step(draws)  # scores the batch
        obs, *_ = env.step(draws)  # NEXT_STEP autoreset: new images
    return decisions * batch / (time.perf_counter() - start)


def rllib_runner(model: torch.nn.Module, images: np.ndarray, batch: int) -> float:
    """Images per second of a real RLlib EnvRunner sampling the AHM vector env."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from medmask.rl import ahm_appo_config

    config = ahm_appo_config(envs.ENV_ID, {"reconstruction": model, "images": images},
                             num_env_runners=0, num_envs_per_env_runner=batch, channels=16)
    runner = SingleAgentEnvRunner(config=config)
    runner.sample(num_timesteps=batch, random_actions=False)  # warm-up
    start = time.perf_counter()
    episodes = runner.sample(num_timesteps=len(images), random_actions=False)
    steps = sum(len(e) for e in episodes)
    seconds = time.perf_counter() - start
    runner.stop()
    return steps / seconds


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
    rates: dict[str, list[float]] = {"bare": [], "loop": [], "rllib": []}
    bare_forward(model, images[: 2 * args.batch], args.batch)  # warm-up (allocator, kernels)
    rl_loop(model, policy, images[: 2 * args.batch], args.batch)
    for _ in range(args.rounds):  # interleaved: machine noise hits all alike
        rates["bare"].append(bare_forward(model, images, args.batch))
        rates["loop"].append(rl_loop(model, policy, images, args.batch))
        if not args.no_rllib:
            rates["rllib"].append(rllib_runner(model, images, args.batch))
    medians = {k: statistics.median(v) for k, v in rates.items() if v}
    print(f"unet_tiny {args.size} px, patch {args.patch} ({model.grid.num_patches} patches), "
          f"batch {args.batch}, {args.images} images, {args.threads} thread(s), "
          f"{args.rounds} rounds")
    for name, rate in medians.items():
        print(f"  {name:6s} {rate:8.1f} images/s   ratio to bare {rate / medians['bare']:.2f}")
    print(f"RL loop / bare forward: {medians['loop'] / medians['bare']:.2f} (target >= 0.50)")
    if "rllib" in medians:
        print(f"RLlib EnvRunner / bare forward: {medians['rllib'] / medians['bare']:.2f} "
              "(target >= 0.80)")


if __name__ == "__main__":
    main()

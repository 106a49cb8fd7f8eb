"""MAE training-step time at masking ratio 0.75 vs 0.0: what the visible-only encoder buys.

One training step = forward (``model(images, mask)``) + the masked-mean loss (RGMIM eq. 5) +
backward + AdamW step (RGMIM Table 1 betas/decay), on one CPU thread by default, for the same
model, batch and images at both ratios. MAE's encoder runs on the visible patches only, so at
ratio 0.75 it processes a quarter of the tokens; the decoder always sees all N. Target: step
time ratio (0.75 / 0.0) <= 0.33 at ViT-S/16 224 px, MAE's own 3x (raised from 0.45 when 0.379
was measured).

Usage::

    python benchmarks/mae_train_step.py                       # tiny (batch 32) + ViT-S/16 (batch 8)
    python benchmarks/mae_train_step.py --models mae_vit_tiny_64:64 --steps 20
    python benchmarks/mae_train_step.py --device cuda --threads 16   # GPU, for reference

Steps of the two ratios are interleaved so that machine noise hits both alike. Prints one line
per (model, ratio) with the median step time, the AdamW share and images/s, then the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from medmask.masking import random_mask  # noqa: E402
from medmask.models import create_model, masked_mean_loss  # noqa: E402

DEFAULT_MODELS = ("mae_vit_tiny_64:32", "mae_vit_small_224:8")
TARGET = 0.33


class StepRunner:
    """One model + AdamW (RGMIM Table 1 betas and decay) + fixed images and masks at one ratio."""

    def __init__(self, model_name: str, batch_size: int, ratio: float, steps: int,
                 device: torch.device, foreach: bool | None) -> None:
        torch.manual_seed(0)  # the same initial weights at every ratio
        self.model = create_model(model_name).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1.5e-4, betas=(0.9, 0.95),
                                           weight_decay=0.05, foreach=foreach)
        generator = torch.Generator().manual_seed(0)
        grid, chans = self.model.grid, self.model.in_chans
        self.images = torch.rand(batch_size, chans, grid.height, grid.width,
                                 generator=generator).to(device)
        self.masks = [random_mask(batch_size, grid, ratio, generator=generator).to(device)
                      for _ in range(steps)]
        self.device = device
        self.step_times: list[float] = []
        self.optimizer_times: list[float] = []

    def step(self, index: int, record: bool) -> None:
        mask = self.masks[index]
        _sync(self.device)
        start = time.perf_counter()
        loss = masked_mean_loss(self.model(self.images, mask).patch_loss, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _sync(self.device)
        before_optimizer = time.perf_counter()
        self.optimizer.step()
        _sync(self.device)
        end = time.perf_counter()
        if record:
            self.step_times.append(end - start)
            self.optimizer_times.append(end - before_optimizer)


def compare(model_name: str, batch_size: int, ratios: list[float], steps: int, warmup: int,
            device: torch.device, foreach: bool | None) -> dict[float, StepRunner]:
    """Time both ratios with their steps interleaved (machine noise hits both alike)."""
    runners = {r: StepRunner(model_name, batch_size, r, warmup + steps, device, foreach)
               for r in ratios}
    for index in range(warmup + steps):
        for runner in runners.values():
            runner.step(index, record=index >= warmup)
    return runners


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help="NAME:BATCH pairs of registered models")
    parser.add_argument("--ratios", nargs=2, type=float, default=[0.75, 0.0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--foreach", action=argparse.BooleanOptionalAction, default=None,
                        help="AdamW foreach implementation (default: torch's choice)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    masked_ratio, reference_ratio = args.ratios
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{args.steps} timed steps after {args.warmup} warm-up (median)")
    for spec in args.models:
        name, batch_text = spec.split(":")
        batch = int(batch_text)
        runners = compare(name, batch, [masked_ratio, reference_ratio], args.steps, args.warmup,
                          device, args.foreach)
        medians = {}
        for ratio, runner in runners.items():
            medians[ratio] = statistics.median(runner.step_times)
            optimizer_ms = statistics.median(runner.optimizer_times) * 1e3
            print(f"{name:<20} batch {batch:>3}  ratio {ratio:.2f}: "
                  f"step {medians[ratio] * 1e3:9.1f} ms (min {min(runner.step_times) * 1e3:8.1f}, "
                  f"AdamW {optimizer_ms:6.1f})  {batch / medians[ratio]:8.1f} images/s")
        speed = medians[masked_ratio] / medians[reference_ratio]
        verdict = "meets" if speed <= TARGET else "MISSES"
        print(f"{name:<20} step time ratio {masked_ratio} / {reference_ratio} = {speed:.3f} "
              f"({verdict} the <= {TARGET} target)")


if __name__ == "__main__":
    main()

"""Step time and peak memory of each segmentation-guided SSL method relative to ``simclr``.

The segmentation-guided SSL issue's cost figures: on the same phantoms, batch and backbone
width, one optimizer step of each method (its registered ``batch_loss``: two keyed views,
the method's segmentation and loss, backward, AdamW) against the SimCLR baseline's.

- **Step time**: every method built once in this process, ``--warmup`` steps each, then
  ``--rounds`` interleaved rounds (each round runs ``--steps`` steps of every method, the order
  rotated per round, so that machine noise hits every method alike); the median of all timed
  steps per method, by wall time and by this process's CPU time (steadier on a machine shared
  with other jobs). One torch thread by default.
- **Peak RSS**: each method in a fresh spawned child process (an in-process peak only ever
  rises: the first method would be charged for all): the same data, ``--warmup`` + ``--steps``
  steps, then the child's peak resident set (``VmHWM``; ``ru_maxrss`` survives ``exec`` on
  Linux, so a spawned child would report the parent's peak). A "floor" child that builds the
  data but no model gives what every child pays for Python, torch and the phantoms; the ratio
  of the increments over that floor is the method's own memory.

Per-step figures exclude what runs once per image outside the step: option 4's lung crop
(``seg_crop`` trains on images cropped beforehand, its step is SimCLR's on other pixels) and the
data decoding. The MAE row (MIM ViT at 0.75) is a different backbone, shown for reference.

    python benchmarks/seg_ssl_overhead.py            # 64 px, batch 32, 5 rounds x 3 steps
    python benchmarks/seg_ssl_overhead.py --quick    # 32 px, batch 16, 3 rounds x 2 steps
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from medmask import columns as C  # noqa: E402
from medmask.data.phantom import generate  # noqa: E402
from medmask.keyed import image_keys  # noqa: E402
from medmask.masking import create_mask_strategy  # noqa: E402
from medmask.methods import create_method  # noqa: E402
from medmask.preprocess import CropToLungs  # noqa: E402

BASELINE = "simclr"
CNN = {"width": 0.125, "proj_dim": 32}  # the study's backbone (configs/sweep/seg_guided_ssl.yaml)
# method -> (registered method, model, its params; None = the image size)
METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "simclr": ("simclr", "contrastive_cnn_tiny", CNN),
    "simclr_recon": ("simclr_recon", "contrastive_cnn_tiny", {**CNN, "img_size": None}),
    "masked_contrastive": ("masked_contrastive", "contrastive_cnn_tiny", CNN),
    "multi_region": ("multi_region", "contrastive_cnn_tiny", {**CNN, "regions": 6}),
    "pathology_aware": ("pathology_aware", "contrastive_cnn_tiny", CNN),
    "seg_crop": ("seg_crop", "contrastive_cnn_tiny", CNN),
    "seg_attention": ("seg_attention", "seg_attention_cnn_tiny", {**CNN, "img_size": None}),
    "mae": ("mae", "mae_vit_tiny_64", {"img_size": None, "patch_size": 4, "embed_dim": 64,
                                       "depth": 2, "num_heads": 4, "decoder_embed_dim": 64,
                                       "decoder_depth": 1, "decoder_num_heads": 4}),
}


def phantom_batch(size: int, batch: int, seed: int = 0, cropped: bool = False
                  ) -> dict[str, torch.Tensor]:
    """One batch of phantoms (image, organ map, image keys), lung-cropped for option 4."""
    rows = generate(batch, size, seed)
    if cropped:
        rows = {**rows, **CropToLungs()({C.IMAGE: rows[C.IMAGE], C.ORGANS: rows[C.ORGANS]})}
    return {C.IMAGE: torch.from_numpy(np.ascontiguousarray(rows[C.IMAGE])),
            C.ORGANS: torch.from_numpy(np.ascontiguousarray(rows[C.ORGANS])),
            C.IMAGE_KEY: torch.from_numpy(image_keys(rows[C.ID]))}


@dataclass
class MethodStep:
    """One method's model, optimizer and batch: ``step()`` runs one optimizer step."""

    name: str
    parts: Any
    optimizer: torch.optim.Optimizer
    batch: dict[str, torch.Tensor]
    steps: int = 0

    @classmethod
    def build(cls, name: str, size: int, batch: int, seed: int = 0) -> MethodStep:
        method_name, model, params = METHODS[name]
        params = {k: (size if v is None else v) for k, v in params.items()}
        config = {"seed": seed, "mixed_precision": False, "method_params": {},
                  "model": {"name": model, "params": params},
                  "masking": {"name": "random", "ratio": 0.75, "params": {}},
                  "crop": {"padding": 20, "min_crop_ratio": 0.5} if name == "seg_crop" else None}
        torch.manual_seed(seed)
        method = create_method(method_name)
        strategy = create_mask_strategy("random") if method.uses_masks else None
        parts = method.build(config, torch.device("cpu"), strategy)
        parts.model.train()
        optimizer = torch.optim.AdamW(parts.model.parameters(), lr=1e-3, weight_decay=0.05)
        return cls(name, parts, optimizer,
                   phantom_batch(size, batch, seed, cropped=name == "seg_crop"))

    def step(self) -> float:
        loss, _ = self.parts.batch_loss(self.parts.model, self.batch, self.steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return float(loss.detach())


def interleaved_step_times(runners: Sequence[MethodStep], rounds: int, steps: int,
                           warmup: int, clock: Callable[[], float] = time.perf_counter,
                           cpu_clock: Callable[[], float] = time.process_time
                           ) -> dict[str, tuple[float, float]]:
    """``{method: (median wall s, median CPU s)}`` per step: ``warmup`` untimed steps each,
    then ``rounds`` rounds of ``steps`` timed steps of every method, the order rotated by one
    each round."""
    for runner in runners:
        for _ in range(warmup):
            runner.step()
    wall: dict[str, list[float]] = {r.name: [] for r in runners}
    cpu: dict[str, list[float]] = {r.name: [] for r in runners}
    for round_index in range(rounds):
        shift = round_index % len(runners)
        for runner in [*runners[shift:], *runners[:shift]]:
            for _ in range(steps):
                start, start_cpu = clock(), cpu_clock()
                runner.step()
                wall[runner.name].append(clock() - start)
                cpu[runner.name].append(cpu_clock() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]))
            for name in wall}


def ratios(values: dict[str, float], baseline: str = BASELINE) -> dict[str, float]:
    """Each value over the baseline's."""
    if baseline not in values:
        raise ValueError(f"the ratios need the {baseline!r} baseline among {sorted(values)}")
    return {name: value / values[baseline] for name, value in values.items()}


def _peak_rss_child(name: str | None, size: int, batch: int, steps: int,
                    out: Any) -> None:
    torch.set_num_threads(1)
    if name is None:  # the floor: imports and the data, no model
        phantom_batch(size, batch)
    else:
        runner = MethodStep.build(name, size, batch)
        for _ in range(steps):
            runner.step()
    out.put(high_water_mb())


def high_water_mb() -> float:
    """This process's peak resident set (MiB): ``VmHWM`` of ``/proc/self/status``, which a
    fresh ``exec`` resets (``ru_maxrss`` is not: a spawned child would report its parent's
    peak), else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024  # kB -> MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb(name: str | None, size: int, batch: int, steps: int) -> float:
    """Peak RSS (MiB) of a fresh spawned process that runs ``steps`` steps of ``name`` (None:
    the floor, data only)."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_peak_rss_child, args=(name, size, batch, steps, out))
    process.start()
    value = out.get(timeout=600)
    process.join()
    return float(value)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS children")
    parser.add_argument("--quick", action="store_true",
                        help="32 px, batch 16, 3 rounds x 2 steps, 1 warm-up step")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.rounds, args.steps, args.warmup = 32, 16, 3, 2, 1
    methods = [BASELINE, *[m for m in args.methods if m != BASELINE]]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runners = [MethodStep.build(name, args.size, args.batch) for name in methods]
    times = interleaved_step_times(runners, args.rounds, args.steps, args.warmup)
    wall = ratios({k: v[0] for k, v in times.items()})
    cpu = ratios({k: v[1] for k, v in times.items()})
    memory: dict[str, float] = {}
    if not args.no_memory:
        floor = peak_rss_mb(None, args.size, args.batch, 0)
        memory = {name: peak_rss_mb(name, args.size, args.batch, args.warmup + args.steps)
                  for name in methods}
    print(f"segmentation-guided SSL overhead vs {BASELINE}: {args.size} px, batch {args.batch}, "
          f"{args.threads} torch thread(s), median of {args.rounds} interleaved rounds x "
          f"{args.steps} steps after {args.warmup} warm-up step(s); "
          f"{time.perf_counter() - start:.0f} s in all")
    if memory:
        print(f"peak RSS: fresh process per method; floor (imports + data, no model) "
              f"{floor:.0f} MiB")
    for name in methods:
        line = (f"{name:19s} step {times[name][0] * 1e3:8.1f} ms  {name} / {BASELINE} : "
                f"{wall[name]:.2f}x (CPU time {cpu[name]:.2f}x)")
        if memory:
            own = (memory[name] - floor) / max(memory[BASELINE] - floor, 1e-9)
            line += (f"  peak RSS {memory[name]:7.0f} MiB : {memory[name] / memory[BASELINE]:.2f}x"
                     f" (above the floor {own:.2f}x)")
        print(line)


if __name__ == "__main__":
    main()

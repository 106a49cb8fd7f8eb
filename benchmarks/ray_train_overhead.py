"""Ray Train's cost over a bare PyTorch loop: quick MAE pretraining images/s (target >= 0.85x).

The same model (the quick default, ``configs/model/mae_tiny.yaml``: ``mae_vit_tiny_64``, patch 4,
64 px), batch size (64), data (phantoms in one materialized Ray dataset), loss (the ``mae``
method: random masks drawn anew every epoch) and AdamW + warmup-cosine, in one process each:

- bare: a plain loop over the images held as tensors in this process (zero_grad, backward,
  step), with ``torch.set_num_threads(threads)``;
- Ray Train: ``TorchTrainer``, 1 worker with ``cpus`` CPUs (2 by default) running medmask's
  pretraining loop: Ray Data shard iteration, a report and a checkpoint every epoch. Ray would
  set the worker's ``OMP_NUM_THREADS`` to its CPU count; here ``OMP_NUM_THREADS=threads`` is
  set for every Ray process, so both loops run ``threads`` torch threads (1 by default: on a
  2-core machine shared with other work, 2 OpenMP threads spin at their barriers while the
  other core is taken, measured 25-54 images/s against 89-100 with 1 thread at load ~5).

Both after one warm-up epoch (worker start-up, first-touch allocations). Ray Train's images/s
is taken between the ends of its first and last epochs (``perf/epoch_end_unix_s``), so it
includes the per-epoch report and checkpoint; the bare loop runs before and after the Ray run
and the ratio is against their mean. Both loops' torch thread counts are printed.

    python benchmarks/ray_train_overhead.py            # 512 images, 4 timed epochs
    python benchmarks/ray_train_overhead.py --quick    # 256 images, 3 timed epochs
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# this clone's sources, here and in every Ray worker (they inherit PYTHONPATH from the raylet)
SOURCES = [str(ROOT / "platform"), str(ROOT)]  # medmask, envs
sys.path[:0] = SOURCES
os.environ["PYTHONPATH"] = os.pathsep.join(
    [*SOURCES, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")

from medmask import columns as C  # noqa: E402
from medmask.masking import create_mask_strategy  # noqa: E402
from medmask.methods import create_method  # noqa: E402
from medmask.models import use_channels_last  # noqa: E402
from medmask.train import (  # noqa: E402
    OptimizerConfig,
    ScalingSettings,
    build_optimizer,
    build_scheduler,
    build_trainer,
    pretrain_loop,
    steps_per_epoch,
    train_view,
)

QUICK_MAE = {"name": "mae_vit_tiny_64",
             "params": {"img_size": 64, "patch_size": 4, "embed_dim": 64, "depth": 2,
                        "num_heads": 4, "decoder_embed_dim": 64, "decoder_depth": 1,
                        "decoder_num_heads": 4}}
OPTIM = {"base_lr": 4.0e-3, "weight_decay": 0.05, "betas": [0.9, 0.95], "warmup_epochs": 1}


def loop_config(model: dict[str, Any], rows: int, batch_size: int, epochs: int,
                mixed: bool | str = True) -> dict[str, Any]:
    """The pretraining loop's config (``medmask.train.pretrain_loop``), MAE with random masks."""
    return {"method": "mae", "model": model,
            "masking": {"name": "random", "ratio": 0.75, "params": {}},
            "optim": OPTIM, "batch_size": batch_size, "epochs": epochs,
            "steps_per_epoch": steps_per_epoch(rows, batch_size, 1), "seed": 0,
            "mixed_precision": mixed}


def phantoms(n: int, size: int) -> Any:
    """``n`` phantoms of ``size`` px as one materialized Ray dataset (image, image_key)."""
    from medmask.preprocess import phantom_dataset

    return train_view(phantom_dataset(n, size, seed=0, chunk=64)).materialize()


def bare_images_per_s(config: dict[str, Any], batch: dict[str, torch.Tensor], epochs: int,
                      device: torch.device, channels_last: bool | None = None
                      ) -> tuple[float, int]:
    """Images/s of a plain loop over ``batch`` (all images, in memory) for ``epochs`` epochs
    after one warm-up epoch, and its torch thread count."""
    torch.manual_seed(0)
    parts = create_method("mae").build(config, device, create_mask_strategy("random"))
    model = use_channels_last(parts.model.to(device), device, channels_last)
    optim_cfg = OptimizerConfig(**config["optim"])
    optimizer = build_optimizer(model, optim_cfg, int(config["batch_size"]))
    scheduler = build_scheduler(optimizer, optim_cfg, steps_per_epoch=config["steps_per_epoch"],
                                epochs=epochs + 1)
    rows, size = len(batch[C.IMAGE]), int(config["batch_size"])
    data = {k: v.to(device) for k, v in batch.items()}
    start = 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            synchronize(device)
            start = time.perf_counter()
        for low in range(0, rows, size):
            step = {k: v[low:low + size] for k, v in data.items()}
            loss, _ = parts.batch_loss(model, step, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss.item()  # what the Ray loop does every step (a finite-loss check)
    synchronize(device)
    return rows * epochs / (time.perf_counter() - start), torch.get_num_threads()


def ray_images_per_s(config: dict[str, Any], dataset: Any, epochs: int, scaling: ScalingSettings,
                     storage: Path) -> tuple[float, int, float]:
    """Images/s of medmask's pretraining loop under ``TorchTrainer`` between the ends of the
    warm-up epoch and the last, the worker's torch threads and the loop's own images/s."""
    rows = dataset.count()
    trainer = build_trainer(pretrain_loop, {**config, "epochs": epochs + 1}, {"train": dataset},
                            scaling=scaling, storage_path=storage, name="overhead")
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"the Ray Train run failed: {result.error}")
    frame = result.metrics_dataframe.sort_values("charts/epoch")
    ends = frame["perf/epoch_end_unix_s"].to_numpy()
    in_loop = float(statistics.median(frame["perf/images_per_s"].to_numpy()[1:]))
    return rows * epochs / (ends[-1] - ends[0]), int(frame["perf/torch_threads"].iloc[-1]), in_loop


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def all_rows(dataset: Any) -> dict[str, torch.Tensor]:
    """The whole dataset as tensors in this process (what the bare loop iterates)."""
    return next(iter(dataset.iter_torch_batches(batch_size=dataset.count(), device="cpu")))


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or this process's peak resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both loops")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray Train worker")
    parser.add_argument("--quick", action="store_true", help="256 images, 3 timed epochs")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs = 256, 3
    import ray

    torch.set_num_threads(args.threads)
    threads_env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    os.environ.update(threads_env)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": threads_env})
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        dataset = phantoms(args.images, 64)
        config = loop_config(QUICK_MAE, args.images, args.batch_size, args.epochs + 1)
        batch = all_rows(dataset)
        print(f"quick MAE ({QUICK_MAE['name']}, 64 px, patch 4), {args.images} images, batch "
              f"{args.batch_size}, {args.epochs} timed epochs after 1 warm-up; {load_line()}")
        cpu = torch.device("cpu")
        before, bare_threads = bare_images_per_s(config, batch, args.epochs, cpu)
        print(f"  bare loop      : {before:8.1f} images/s (torch threads {bare_threads})")
        with tempfile.TemporaryDirectory(prefix="medmask-overhead-") as tmp:
            scaling = ScalingSettings(num_workers=1, resources_per_worker={"CPU": args.cpus},
                                      keep_checkpoints=args.epochs + 2, max_failures=0)
            through_ray, ray_threads, in_loop = ray_images_per_s(config, dataset, args.epochs,
                                                                 scaling, Path(tmp))
        print(f"  Ray Train      : {through_ray:8.1f} images/s epoch to epoch, "
              f"{in_loop:.1f} inside its epochs (torch threads {ray_threads})")
        after, _ = bare_images_per_s(config, batch, args.epochs, cpu)
        print(f"  bare loop again: {after:8.1f} images/s")
    finally:
        ray.shutdown()
    bare = (before + after) / 2
    print(f"Ray Train / bare : {through_ray / bare:.2f}x (target >= 0.85; inside the epochs "
          f"{in_loop / bare:.2f}x); {load_line()}")


if __name__ == "__main__":
    main()

"""Pieces of the epoch-loop skeleton: device, timing, one epoch of steps, optimizer state."""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from medmask.train._optim import OptimizerConfig, build_optimizer, build_scheduler


def quiet_data_progress() -> None:
    """Per-epoch Ray Data progress bars from every worker drown the logs: the loops report
    their own per-epoch metrics instead."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False


def train_device() -> torch.device:
    """The device Ray Train assigned to this worker (CPU when there is no GPU)."""
    import ray.train.torch

    return ray.train.torch.get_device()


class StepTimer:
    """Splits wall time into waiting for data and computing (is the input pipeline keeping up?)."""

    def __init__(self) -> None:
        self.data_s = 0.0
        self.compute_s = 0.0
        self.images = 0
        self._mark = time.perf_counter()

    def batches(self, iterable: Any) -> Iterator[Any]:
        """Iterate ``iterable`` counting the time spent waiting for each batch."""
        iterator = iter(iterable)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.data_s += time.perf_counter() - start
            step_start = time.perf_counter()
            yield batch
            self.compute_s += time.perf_counter() - step_start

    def summary(self) -> dict[str, float]:
        total = max(self.data_s + self.compute_s, 1e-9)
        return {
            "perf/images_per_s": self.images / total,
            "perf/data_wait_share": self.data_s / total,
            "perf/epoch_s": total,
            # when the epoch's steps ended (unix s): consecutive epochs' difference is the wall
            # time per epoch with the report and checkpoint between them
            "perf/epoch_end_unix_s": time.time(),
            "perf/torch_threads": torch.get_num_threads(),
            **peak_memory(),
        }


def peak_memory() -> dict[str, float]:
    """``perf/peak_rss_mb``: this process's peak resident memory so far (Linux ``ru_maxrss``,
    KiB), and ``perf/peak_gpu_mb`` (torch's peak allocation) where CUDA is in use."""
    out = {"perf/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["perf/peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def train_epoch(
    batches: Any,
    batch_loss: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    epoch: int,
    what: str,
) -> dict[str, Any]:
    """One epoch of optimizer steps, shared by the pretraining, fine-tuning and segmentation
    loops: ``batch_loss(batch) -> (loss, images)`` for every batch, then zero_grad, backward,
    step and the per-step schedule; a non-finite loss stops with a FloatingPointError.

    Returns ``charts/epoch``, the epoch's ``train/loss`` (mean over steps), ``train/lr`` (the
    largest group's, i.e. the head's under layer-wise decay),
    ``train/steps``, ``perf/step_s`` (wall time per optimizer step) and the
    :class:`StepTimer` summary (images/s, share of time waiting for data, peak memory).
    """
    import math

    timer = StepTimer()
    total, steps = 0.0, 0
    for batch in timer.batches(batches):
        loss, images = batch_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"{what} loss became {value} at epoch {epoch}")
        total += value
        steps += 1
        timer.images += int(images)
    return {"charts/epoch": epoch, "train/loss": total / max(steps, 1),
            "train/lr": max(group["lr"] for group in optimizer.param_groups),
            "train/steps": steps,
            "perf/step_s": (timer.data_s + timer.compute_s) / max(steps, 1),
            **timer.summary()}


@contextmanager
def checkpoint_dir() -> Iterator[str]:
    """A temporary folder for one checkpoint report."""
    with tempfile.TemporaryDirectory(prefix="medmask-ckpt-") as path:
        yield path


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``torch.compile`` and a DDP wrapper (for state dicts and
    attributes)."""
    model = getattr(model, "_orig_mod", model)
    return model.module if hasattr(model, "module") else model


def optimization_state(model: torch.nn.Module, config: dict[str, Any],
                       restored: dict[str, Any] | None = None) -> tuple[Any, Any, int]:
    """AdamW + warmup-cosine from ``config`` and the epoch to start from.

    After a worker failure Ray Train hands the latest reported checkpoint back
    (``ray.train.get_checkpoint``, read by the loop as ``restored``): model, optimizer and
    scheduler are restored from it and training continues at the epoch after the one it saved.
    """
    optim_cfg = OptimizerConfig(**config.get("optim", {}))
    optimizer = build_optimizer(model, optim_cfg, int(config["batch_size"]))
    scheduler = build_scheduler(optimizer, optim_cfg,
                                steps_per_epoch=int(config["steps_per_epoch"]),
                                epochs=int(config["epochs"]))
    if restored is None:
        return optimizer, scheduler, 0
    model.load_state_dict(restored["model"])
    optimizer.load_state_dict(restored["optimizer"])
    scheduler.load_state_dict(restored["scheduler"])
    return optimizer, scheduler, int(restored["epoch"]) + 1

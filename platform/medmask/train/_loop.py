"""The one epoch-loop skeleton of every Ray Train loop (pretraining, fine-tuning, segmentation).

A loop is a plain ``train_loop_per_worker(config)`` (Ray's examples' shape); what differs
between loops is only :class:`~medmask.methods.LoopParts` (the model, the loss of a batch, an
optional validation), built by a function of the config. This skeleton does the rest, once:
seeding, the device, optimizer and schedule (restored from Ray Train's checkpoint after a
worker failure), the DDP wrap, the dataset shards, the epochs, per-epoch metrics to MLflow from
rank 0, and a checkpoint with every report.

Config keys read here: ``optim`` (:class:`OptimizerConfig` fields), ``batch_size`` (global),
``epochs``, ``steps_per_epoch``, ``seed``, ``model`` ({name, params}: saved with the
checkpoint), optional ``tracking`` ({uri, run_id}), optional ``inject_failure`` ({epoch,
marker}: kill this worker once at that epoch, to exercise checkpoint resume), optional
``device_options`` ({channels_last: None = on CUDA | bool, compile: bool}: set from
:class:`~medmask.train.ScalingSettings` by ``build_trainer``).

On CUDA the batches come through pinned host memory (Ray Data's ``pin_memory``, prefetched 2
ahead) and the model's parameters are channels-last; ``mixed_precision`` (the methods' bf16
autocast) is the other half of the GPU path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from medmask.methods import LoopParts
from medmask.models import use_channels_last
from medmask.tracking import log_metrics_to_run
from medmask.train._checkpoint import save_checkpoint
from medmask.train._loop_utils import (
    checkpoint_dir,
    optimization_state,
    quiet_data_progress,
    train_device,
    train_epoch,
    unwrap,
)

BuildParts = Callable[[dict[str, Any], torch.device], LoopParts]


def run_epochs(config: dict[str, Any], build_parts: BuildParts, *, what: str) -> None:
    """Run the epochs of one Ray Train worker with the parts ``build_parts(config, device)``.

    Datasets: ``train`` (split across workers) and, when the parts validate, ``val`` (whole,
    evaluated on rank 0 after every epoch). ``what`` names the loop in error messages.
    """
    torch.manual_seed(int(config["seed"]))
    quiet_data_progress()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = train_device()
    parts = build_parts(config, device)
    options = dict(config.get("device_options") or {})
    use_channels_last(parts.model, device, options.get("channels_last"))
    optimizer, scheduler, start_epoch = optimization_state(parts.model, config)
    model = ray.train.torch.prepare_model(parts.model)
    if options.get("compile"):
        model = torch.compile(model)  # opt-in: minutes of compiling on a small CPU
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if parts.validate is not None else None
    per_worker_batch = max(1, int(config["batch_size"]) // world)
    logger = EpochLogger(config.get("tracking"), rank)
    for epoch in range(start_epoch, int(config["epochs"])):
        maybe_fail(config.get("inject_failure"), epoch)
        model.train()
        batches = train_shard.iter_torch_batches(batch_size=per_worker_batch,
                                                 prefetch_batches=2, device=device,
                                                 pin_memory=device.type == "cuda")

        def batch_loss(batch: dict[str, torch.Tensor], epoch: int = epoch) -> tuple[Any, int]:
            return parts.batch_loss(model, batch, epoch)

        metrics = train_epoch(batches, batch_loss, optimizer, scheduler, epoch=epoch, what=what)
        metrics["charts/resumed_from_epoch"] = start_epoch
        if rank == 0 and val_shard is not None and parts.validate is not None:
            scores = parts.validate(unwrap(model), val_shard, per_worker_batch, device)
            metrics.update({f"val/{k}": v for k, v in scores.items()})
        logger.log(metrics, step=epoch)
        report(metrics, rank, epoch, model, optimizer, scheduler, config)


def report(metrics: dict[str, Any], rank: int, epoch: int, model: torch.nn.Module,
           optimizer: torch.optim.Optimizer, scheduler: Any, config: dict[str, Any]) -> None:
    """``ray.train.report`` of the epoch; rank 0 attaches the checkpoint (model, optimizer,
    scheduler, epoch and the model's registry name and parameters)."""
    if rank != 0:
        ray.train.report(metrics)
        return
    with checkpoint_dir() as directory:
        save_checkpoint(directory, {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "model_name": config["model"]["name"],
            "model_params": dict(config["model"].get("params", {})),
        })
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


class EpochLogger:
    """Per-epoch metrics from rank 0 into the stage's MLflow run (live curves in the UI)."""

    def __init__(self, tracking: dict[str, Any] | None, rank: int) -> None:
        self.target = tracking if (tracking and tracking.get("run_id") and rank == 0) else None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.target is None:
            return
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        log_metrics_to_run(self.target["uri"], self.target["run_id"], numeric, step=step)


def maybe_fail(spec: dict[str, Any] | None, epoch: int) -> None:
    """Chaos hook: kill this worker process once, at ``spec['epoch']`` (marker file guards)."""
    if not spec or int(spec["epoch"]) != epoch:
        return
    marker = Path(spec["marker"])
    if marker.exists():
        return
    marker.write_text(f"killed at epoch {epoch}\n")
    time.sleep(3.0)  # let the controller collect the previous epoch's report first
    os._exit(1)

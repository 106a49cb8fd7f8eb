"""The one masked-image-modeling pretraining loop, for every model family and mask strategy.

A plain ``train_loop_per_worker(config)`` (Ray's convention): the trainer, the scaling and the
run config are built outside it (:mod:`medmask.train._trainer`). The model interface is
``model(images, mask) -> output`` with ``output.patch_loss`` [B, N] for every patch, and the
training loss is its mean over the masked patches (:func:`medmask.models.masked_mean_loss`):
the MAE ViT and the SimMIM-style U-Net go through the same lines.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from medmask.models import create_model, masked_mean_loss
from medmask.tracking import log_metrics_to_run
from medmask.train._checkpoint import save_checkpoint
from medmask.train._loop_utils import (
    autocast,
    checkpoint_dir,
    epoch_masks,
    images_nchw,
    optimization_state,
    quiet_data_progress,
    train_device,
    train_epoch,
    unwrap,
)
from medmask.train._masks import build_mask_strategy


def pretrain_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop: masked image modeling with masks drawn anew every epoch.

    Config keys: ``model`` ({name, params}), ``masking`` ({name, ratio, params}), ``optim``
    (:class:`OptimizerConfig` fields), ``batch_size`` (global), ``epochs``,
    ``steps_per_epoch``, ``seed``, ``mixed_precision``, optional ``tracking`` ({uri, run_id}:
    rank 0 logs per-epoch metrics there), optional ``inject_failure`` ({epoch, marker}: kill
    this worker once at that epoch, to exercise checkpoint resume).
    """
    import ray.train
    import ray.train.torch

    torch.manual_seed(int(config["seed"]))
    quiet_data_progress()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = train_device()

    model = create_model(config["model"]["name"], **config["model"].get("params", {}))
    grid = model.grid
    masking = config["masking"]
    strategy = build_mask_strategy(masking, device=device)
    ratio = float(masking["ratio"])

    batch_size = int(config["batch_size"])
    epochs = int(config["epochs"])
    optimizer, scheduler, start_epoch = optimization_state(model, config)

    model = ray.train.torch.prepare_model(model)

    shard = ray.train.get_dataset_shard("train")
    per_worker_batch = max(1, batch_size // world)
    logger = _EpochLogger(config.get("tracking"), rank)
    for epoch in range(start_epoch, epochs):
        _maybe_fail(config.get("inject_failure"), epoch)
        model.train()
        batches = shard.iter_torch_batches(
            batch_size=per_worker_batch, prefetch_batches=2, device=device
        )

        def batch_loss(batch: dict[str, torch.Tensor], epoch: int = epoch) -> tuple[Any, int]:
            images = images_nchw(batch)
            mask = epoch_masks(strategy, batch, grid, ratio, seed=config["seed"], epoch=epoch)
            mask = mask.to(device)
            with autocast(device, bool(config.get("mixed_precision", True))):
                output = model(images, mask)
                return masked_mean_loss(output.patch_loss.float(), mask), images.shape[0]

        metrics = train_epoch(batches, batch_loss, optimizer, scheduler, epoch=epoch,
                              what="pretraining")
        metrics["resumed_from_epoch"] = start_epoch
        logger.log(metrics, step=epoch)
        _report(metrics, rank, epoch, model, optimizer, scheduler, config)


def _report(
    metrics: dict[str, Any],
    rank: int,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: dict[str, Any],
) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with checkpoint_dir() as directory:
        save_checkpoint(
            directory,
            {
                "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "model_name": config["model"]["name"],
                "model_params": dict(config["model"].get("params", {})),
            },
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


class _EpochLogger:
    """Per-epoch metrics from rank 0 into the stage's MLflow run (live curves in the UI)."""

    def __init__(self, tracking: dict[str, Any] | None, rank: int) -> None:
        self.target = tracking if (tracking and tracking.get("run_id") and rank == 0) else None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.target is None:
            return

        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        log_metrics_to_run(self.target["uri"], self.target["run_id"], numeric, step=step)


def _maybe_fail(spec: dict[str, Any] | None, epoch: int) -> None:
    """Chaos hook: kill this worker process once, at ``spec['epoch']`` (marker file guards)."""
    if not spec or int(spec["epoch"]) != epoch:
        return
    marker = Path(spec["marker"])
    if marker.exists():
        return
    marker.write_text(f"killed at epoch {epoch}\n")
    time.sleep(3.0)  # let the controller collect the previous epoch's report first
    os._exit(1)

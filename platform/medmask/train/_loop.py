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
``shuffle_buffer`` (rows: a local shuffle of the training shard, reseeded every epoch from
``seed`` and the epoch), optional ``report_every`` (validate, log and checkpoint every
this many epochs and at the last one; default 1), optional ``select_on`` (a validation
metric, larger = better: the checkpoint then also carries ``best``, the weights of the best
epoch so far, which
:func:`~medmask.train._trainer.fit_and_load` loads instead of the last epoch's).
optional ``probe`` ({every, l2}: the convergence probe of :mod:`medmask.train._probe` on
rank 0 every ``every`` epochs and at the last, reading the ``probe_fit`` / ``probe_score``
datasets; 0 or absent = off).
``device_options`` ({channels_last: None = on CUDA | bool, compile: bool}: set from
:class:`~medmask.train.ScalingSettings` by ``build_trainer``), optional ``progress`` (the Ray
queue of an :class:`~medmask.train._trainer.EpochProgress`: rank 0 puts every finished epoch
there for the driver's progress bar).

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
from medmask.train._probe import EpochProbe

BuildParts = Callable[[dict[str, Any], torch.device], LoopParts]


def run_epochs(config: dict[str, Any], build_parts: BuildParts, *, what: str) -> None:
    """Run the epochs of one Ray Train worker with the parts ``build_parts(config, device)``.

    Datasets: ``train`` (split across workers) and, when the parts validate, ``val`` (whole,
    evaluated on rank 0 after every epoch). ``what`` names the loop in error messages.
    """
    torch.manual_seed(int(config["seed"]))
    torch.use_deterministic_algorithms(True, warn_only=True)  # the same seed, the same run
    quiet_data_progress()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = train_device()
    parts = build_parts(config, device)
    options = dict(config.get("device_options") or {})
    use_channels_last(parts.model, device, options.get("channels_last"))
    optimizer, scheduler, start_epoch, restored = optimization_state(parts.model, config)
    best = BestEpoch(config.get("select_on"), restored)
    model = ray.train.torch.prepare_model(parts.model)
    if options.get("compile"):
        model = torch.compile(model)  # opt-in: minutes of compiling on a small CPU
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if parts.validate is not None else None
    per_worker_batch = max(1, int(config["batch_size"]) // world)
    logger = EpochLogger(config.get("tracking"), rank)
    shuffle = int(config.get("shuffle_buffer") or 0)
    every = max(1, int(config.get("report_every") or 1))
    probe = EpochProbe(config.get("probe"), rank, int(config["epochs"]))
    for epoch in range(start_epoch, int(config["epochs"])):
        maybe_fail(config.get("inject_failure"), epoch)
        model.train()
        batches = train_shard.iter_torch_batches(
            batch_size=per_worker_batch, prefetch_batches=2, device=device,
            pin_memory=device.type == "cuda", local_shuffle_buffer_size=shuffle or None,
            local_shuffle_seed=(int(config["seed"]) * 1_000_003 + epoch) if shuffle else None)

        def batch_loss(batch: dict[str, torch.Tensor], epoch: int = epoch) -> tuple[Any, int]:
            return parts.batch_loss(model, batch, epoch)

        metrics = train_epoch(batches, batch_loss, optimizer, scheduler, epoch=epoch, what=what)
        if parts.epoch_metrics is not None:
            metrics.update(parts.epoch_metrics())
        metrics.update(probe(unwrap(model), epoch, device))
        metrics["charts/resumed_from_epoch"] = start_epoch
        if rank == 0 and config.get("progress") is not None:  # the driver's progress bar
            config["progress"].put_nowait({"epoch": epoch, "loss": metrics.get("train/loss")})
        last = epoch == int(config["epochs"]) - 1
        if not last and (epoch + 1) % every:
            continue  # many short epochs (a small label fraction): report every ``every``
        if rank == 0 and val_shard is not None and parts.validate is not None:
            scores = parts.validate(unwrap(model), val_shard, per_worker_batch, device)
            metrics.update({f"val/{k}": v for k, v in scores.items()})
            metrics.update(best.update(scores, epoch, unwrap(model)))
        logger.log(metrics, step=epoch)
        report(metrics, rank, epoch, model, optimizer, scheduler, config, best)


class BestEpoch:
    """The best epoch so far on validation metric ``select_on`` (larger is better; the first
    epoch wins ties) and a copy of its weights; inert when ``select_on`` is None."""

    def __init__(self, select_on: str | None, restored: dict[str, Any] | None) -> None:
        self.select_on = select_on
        saved = (restored or {}).get("best") or {}
        self.score: float | None = saved.get("score")
        self.epoch: int | None = saved.get("epoch")
        self.state: dict[str, torch.Tensor] | None = saved.get("model")

    def update(self, scores: dict[str, Any], epoch: int,
               model: torch.nn.Module) -> dict[str, float]:
        """Keep this epoch's weights if it beats the best; the ``val/best_*`` metrics."""
        if self.select_on is None:
            return {}
        if self.select_on not in scores:
            raise ValueError(f"select_on={self.select_on!r} is not a validation metric; the "
                             f"loop reports {sorted(scores)}")
        score = float(scores[self.select_on])
        if self.score is None or score > self.score:
            self.score, self.epoch = score, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"val/best_epoch": float(self.epoch), f"val/best_{self.select_on}": self.score}

    def saved(self) -> dict[str, Any] | None:
        if self.state is None:
            return None
        return {"score": self.score, "epoch": self.epoch, "model": self.state}


def report(metrics: dict[str, Any], rank: int, epoch: int, model: torch.nn.Module,
           optimizer: torch.optim.Optimizer, scheduler: Any, config: dict[str, Any],
           best: BestEpoch | None = None) -> None:
    """``ray.train.report`` of the epoch; rank 0 attaches the checkpoint (model, optimizer,
    scheduler, epoch, the model's registry name and parameters, and the best epoch's weights
    when the loop selects on validation)."""
    if rank != 0:
        ray.train.report(metrics)
        return
    with checkpoint_dir() as directory:
        state = {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "model_name": config["model"]["name"],
            "model_params": dict(config["model"].get("params", {})),
        }
        if best is not None and best.saved() is not None:
            state["best"] = best.saved()
        save_checkpoint(directory, state)
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

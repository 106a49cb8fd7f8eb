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
marker[, cell]}: kill this worker once at that epoch, to exercise checkpoint resume), optional
``shuffle_buffer`` (rows: a local shuffle of the training shard, reseeded every epoch from
``seed`` and the epoch), optional ``report_every`` (validate, log and checkpoint every
this many epochs and at the last one; default 1), optional ``select_on`` (a validation
metric, larger = better: the checkpoint then also carries ``best``, the weights of the best
epoch so far, which
:func:`~medmask.train._trainer.fit_and_load` loads instead of the last epoch's).
optional ``probe`` ({every, l2}: the convergence probe of :mod:`medmask.train._probe` on
rank 0 every ``every`` epochs and at the last, reading the ``probe_fit`` / ``probe_score``
datasets; 0 or absent = off).
``device_options`` ({channels_last: None = on CUDA | bool, compile: bool, torch_threads:
None = Ray's default | int}: set from
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
from medmask.train._checkpoint import load_checkpoint, save_checkpoint
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
# (model with the selected weights, device, the cell's config) -> the cell's result arrays
FinishCell = Callable[[torch.nn.Module, torch.device, dict[str, Any]], dict[str, Any]]


def run_epochs(config: dict[str, Any], build_parts: BuildParts, *, what: str) -> None:
    """Run the epochs of one Ray Train worker with the parts ``build_parts(config, device)``.

    Datasets: ``train`` (split across workers) and, when the parts validate, ``val`` (whole,
    evaluated on rank 0 after every epoch). ``what`` names the loop in error messages.
    """
    quiet_data_progress()
    run_cell(config, build_parts, what=what, restored=restored_state())


def run_cells(config: dict[str, Any], build_parts: BuildParts, finish: FinishCell, *,
              what: str) -> None:
    """Run several training cells one after the other in one Ray Train run (the fine-tuning
    cells of one method: label fractions x modes x learning rates), saving a Ray Train launch
    per cell.

    ``config["cells"]`` lists each cell's own config keys; the other keys of ``config`` are
    shared by every cell. Cell ``i`` trains on the dataset ``config["cells"][i]["train"]``
    (a split dataset name) exactly as :func:`run_epochs` would in a run of its own: seeded
    afresh, so a cell's result does not depend on the cells before it. When a cell's epochs
    are done, rank 0 calls ``finish(model, device, cell_config)`` on the model with the
    selected epoch's weights (its ``best`` on ``select_on``, else the last) and the returned
    arrays, with ``val_score`` and ``best_epoch`` (None without ``select_on``), go into every
    later checkpoint as ``cells_done[i]``: the driver reads all the
    cells' results from the run's last checkpoint. After a worker failure the run resumes
    inside the cell it was in (finished cells are not run again).
    """
    quiet_data_progress()
    restored = restored_state()
    done: dict[int, dict[str, Any]] = dict((restored or {}).get("cells_done") or {})
    shared = {k: v for k, v in config.items() if k != "cells"}
    rank = ray.train.get_context().get_world_rank()
    offset = 0
    for index, cell in enumerate(config["cells"]):
        cell_config = {**shared, **cell, "progress_offset": offset, "cell_index": index}
        offset += int(cell_config["epochs"])
        if index in done:
            continue
        resume = restored if restored and restored.get("cell") == index else None
        carry = {"cell": index, "cells_done": done}
        model, device, best = run_cell(cell_config, build_parts, what=f"{what} cell {index}",
                                       restored=resume, train_key=str(cell["train"]),
                                       carry=carry)
        if rank == 0:
            done[index] = {**finish(model, device, cell_config), "val_score": best.score,
                           "best_epoch": best.epoch}
            with checkpoint_dir() as directory:  # the cell's result, without its weights
                save_checkpoint(directory, {"cell": index, "cells_done": done})
                ray.train.report({"cells/done": len(done)},
                                 checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report({"cells/done": index + 1})


def restored_state() -> dict[str, Any] | None:
    """The state of the checkpoint Ray Train hands back after a worker failure (None on a
    fresh start)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_checkpoint(directory)


def run_cell(config: dict[str, Any], build_parts: BuildParts, *, what: str,
             restored: dict[str, Any] | None, train_key: str = "train",
             carry: dict[str, Any] | None = None
             ) -> tuple[torch.nn.Module, torch.device, BestEpoch]:
    """The epochs of one cell (:func:`run_epochs`, :func:`run_cells`), resumed from the
    checkpoint state ``restored`` when it is the cell's own; ``carry`` goes into every
    checkpoint it reports. Returns the unwrapped model, holding the selected epoch's weights
    (``best`` on ``select_on``; else the last), the device and the :class:`BestEpoch`."""
    torch.manual_seed(int(config["seed"]))  # every cell afresh: its result is its own
    torch.use_deterministic_algorithms(True, warn_only=True)  # the same seed, the same run
    options = dict(config.get("device_options") or {})
    if options.get("torch_threads"):
        torch.set_num_threads(int(options["torch_threads"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = train_device()
    parts = build_parts(config, device)
    use_channels_last(parts.model, device, options.get("channels_last"))
    if restored is not None and "model" not in restored:
        restored = None  # a finished cell's result only: nothing of this cell to resume
    optimizer, scheduler, start_epoch = optimization_state(parts.model, config, restored)
    best = BestEpoch(config.get("select_on"), restored)
    model = ray.train.torch.prepare_model(parts.model)
    if options.get("compile"):
        model = torch.compile(model)  # opt-in: minutes of compiling on a small CPU
    train_shard = ray.train.get_dataset_shard(train_key)
    val_shard = ray.train.get_dataset_shard("val") if parts.validate is not None else None
    per_worker_batch = max(1, int(config["batch_size"]) // world)
    logger = EpochLogger(config.get("tracking"), rank)
    shuffle = int(config.get("shuffle_buffer") or 0)
    every = max(1, int(config.get("report_every") or 1))
    probe = EpochProbe(config.get("probe"), rank, int(config["epochs"]))
    offset = int(config.get("progress_offset") or 0)
    for epoch in range(start_epoch, int(config["epochs"])):
        maybe_fail(config.get("inject_failure"), epoch, config.get("cell_index"))
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
            config["progress"].put_nowait({"epoch": offset + epoch,
                                           "loss": metrics.get("train/loss")})
        last = epoch == int(config["epochs"]) - 1
        if not last and (epoch + 1) % every:
            continue  # many short epochs (a small label fraction): report every ``every``
        if rank == 0 and val_shard is not None and parts.validate is not None:
            scores = parts.validate(unwrap(model), val_shard, per_worker_batch, device)
            metrics.update({f"val/{k}": v for k, v in scores.items()})
            metrics.update(best.update(scores, epoch, unwrap(model)))
        logger.log(metrics, step=epoch)
        report(metrics, rank, epoch, model, optimizer, scheduler, config, best, carry)
    final = unwrap(model)
    if best.state is not None:
        final.load_state_dict(best.state)
    return final, device, best


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
           best: BestEpoch | None = None, carry: dict[str, Any] | None = None) -> None:
    """``ray.train.report`` of the epoch; rank 0 attaches the checkpoint (model, optimizer,
    scheduler, epoch, the model's registry name and parameters, the best epoch's weights
    when the loop selects on validation, and ``carry``: :func:`run_cells`' cell index and
    finished cells)."""
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
        state.update(carry or {})
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


def maybe_fail(spec: dict[str, Any] | None, epoch: int, cell: int | None = None) -> None:
    """Chaos hook: kill this worker process once, at ``spec['epoch']`` (of the cell
    ``spec['cell']`` when given, in a :func:`run_cells` run; marker file guards)."""
    if not spec or int(spec["epoch"]) != epoch:
        return
    if spec.get("cell") is not None and spec["cell"] != cell:
        return
    marker = Path(spec["marker"])
    if marker.exists():
        return
    marker.write_text(f"killed at epoch {epoch}\n")
    time.sleep(3.0)  # let the controller collect the previous epoch's report first
    os._exit(1)

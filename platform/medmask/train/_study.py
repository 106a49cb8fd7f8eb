"""Pretrain -> fine-tune -> evaluate: the masked-image-modeling study behind mae.py/rgmim.py.

One function, :func:`run_mim_study`, orchestrates the public stages from typed
:class:`MimSettings` (the experiments build them from their Hydra config), with the run tree
study -> trial -> stage in MLflow. At every seed of the study's seed axis, every arm is seeded
the same way: the pretrained arm (and, with ``controls.oracle``, the lesion-first oracle arm)
is pretrained on the unlabelled pool plus the training images and fine-tuned at each label
fraction and mode; From Scratch is fine-tuned with the same recipe and lr grid; the shortcut
baseline is fitted on the same labelled images. The results table has one row per arm x mode
x fraction: means over seeds, and the paired difference to From Scratch (same mode and
fraction; the shortcut against full fine-tuning) with its bootstrap interval over test images
(:func:`medmask.eval.paired_bootstrap`) and each seed's difference. All the fine-tuning
cells of one arm and seed (fractions x modes x lr grid) train in one Ray Train run.
Pretraining checkpoints are cached by a hash of everything that determines them, so fine-tuning
at several label fractions, and later sweeps, reuse one pretraining run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.eval import SHORTCUT_GRID, paired_bootstrap, shortcut_baseline
from medmask.methods import create_method
from medmask.preprocess import study_splits
from medmask.tracking import run_name
from medmask.train._loop_utils import quiet_data_progress
from medmask.train._settings import (
    BaselineSettings,
    MaskingSettings,
    MimSettings,
    TransferSettings,
)
from medmask.train._stages import (
    FinetuneCell,
    finetune_cells,
    label_fraction_subset,
    log_masking_statistics,
    pretraining_summary,
    reconstruction_baselines,
    reconstruction_gallery,
    run_pretraining,
)

SCRATCH, SHORTCUT, ORACLE = "scratch", "shortcut", "lesion_first"
ORACLE_MASKING = "lesion_first"


@dataclass(frozen=True)
class Cell:
    """One fine-tuned (or fitted) model of the study: its arm, seed and test predictions."""

    method: str
    mode: str
    fraction: float
    seed: int
    metrics: dict[str, float]
    correct: np.ndarray  # per test image: 1 where right (multi-label: share of findings right)
    extra: dict[str, float]  # the arm's pretraining diagnostics, the selected lr


def baseline_methods(baselines: BaselineSettings) -> list[tuple[str, TransferSettings | None]]:
    """The baselines fine-tuned without masked pretraining: From Scratch (random init, on by
    default) and Transfer (a local weights file, when ``transfer.weights`` is set)."""
    methods: list[tuple[str, TransferSettings | None]] = []
    if baselines.from_scratch:
        methods.append((SCRATCH, None))
    if baselines.transfer.weights:
        methods.append(("transfer", baselines.transfer))
    return methods


def run_mim_study(settings: MimSettings, tracker: Any) -> pd.DataFrame:
    """Pretrain with ``settings.masking``, fine-tune at each label fraction and compare with
    the controls (From Scratch, shortcut, Transfer, the lesion-first oracle) at every seed.

    Returns the results table (module docstring), also logged as ``results.csv`` with the
    per-seed cells as ``cells.csv``.
    """
    quiet_data_progress()  # the stages report per epoch; per-iteration data bars drown them
    masks = create_method(settings.method).uses_masks  # contrastive methods draw no masks
    label = settings.masking.name if masks else settings.method
    tags = {"strategy": settings.masking.name, "ratio": settings.masking.ratio,
            "method": settings.method, "dataset": settings.data["name"],
            "seeds": ",".join(map(str, settings.seed_axis())), "model": settings.model.name}
    study_name = (run_name(settings.masking.name, ratio=settings.masking.ratio) if masks
                  else run_name(settings.method))
    cells: list[Cell] = []
    with tracker.study(f"{settings.study}-{study_name}", tags=tags) as study:
        study.log_params(dataclasses.asdict(settings))
        for seed in settings.seed_axis():
            cells.extend(seed_cells(dataclasses.replace(settings, seed=seed), tracker, study,
                                    label, masks, {**tags, "seed": seed}))
        table = results_table(cells)
        study.log_table(pd.DataFrame([cell_row(c) for c in cells]), "cells.csv")
        study.log_table(table, "results.csv")
        for row in table.to_dict("records"):
            key = f"{row['method']}/{row['mode']}/frac{row['fraction'] * 100:g}"
            study.log_metrics({f"test/{key}/accuracy": row["accuracy"],
                               f"test/{key}/diff_vs_scratch": row["diff_vs_scratch"]})
    return table


def seed_cells(settings: MimSettings, tracker: Any, study: Any, label: str, masks: bool,
               tags: dict[str, Any]) -> list[Cell]:
    """Every arm of the study at ``settings.seed``: one trial run per arm."""
    seed, cells = settings.seed, []
    datasets = {k: v.materialize() for k, v in study_splits(settings.data, seed).items()}
    arms = [(label, settings.masking)]
    if settings.controls.oracle and masks:
        arms.append((ORACLE, MaskingSettings(ORACLE_MASKING, settings.masking.ratio)))
    for arm, masking in arms:
        arm_settings = dataclasses.replace(settings, masking=masking)
        arm_tags = {**tags, "strategy": masking.name}
        name = run_name(masking.name, ratio=masking.ratio, seed=seed) if masks else run_name(
            settings.method, seed=seed)
        with tracker.trial(name, parent=study, tags=arm_tags) as trial:
            checkpoint, extra = pretrain_stage(arm_settings, datasets, tracker, trial, arm_tags,
                                               masks)
            cells.extend(finetune_stages(arm_settings, datasets, tracker, trial, arm_tags, arm,
                                         checkpoint, settings.modes, extra))
    for method, init_weights in baseline_methods(settings.baselines):
        method_tags = {**tags, "strategy": method}
        with tracker.trial(run_name(method, seed=seed), parent=study, tags=method_tags) as trial:
            modes = settings.modes if init_weights is None else ("full",)
            cells.extend(finetune_stages(settings, datasets, tracker, trial, method_tags,
                                         method, None, modes, {}, init_weights=init_weights))
    if settings.controls.shortcut and not settings.head.multilabel:
        with tracker.trial(run_name(SHORTCUT, seed=seed), parent=study,
                           tags={**tags, "strategy": SHORTCUT}) as trial:
            for fraction in settings.fractions:
                cells.append(shortcut_cell(settings, datasets, trial, fraction))
    return cells


def pretrain_stage(settings: MimSettings, datasets: dict[str, Any], tracker: Any, trial: Any,
                   tags: dict[str, Any], masks: bool) -> tuple[Any, dict[str, float]]:
    """Pretrain (or reuse the cache) in a ``pretrain`` stage run, with its diagnostics:
    masking statistics per epoch, the reconstruction against the inpainting baselines, and
    a reconstruction gallery. Returns the checkpoint and the diagnostics."""
    pretraining = settings.pretraining()
    with tracker.stage("pretrain", parent=trial, tags=tags) as stage:
        start = time.perf_counter()
        checkpoint = run_pretraining(pretraining, datasets, stage, settings.scaling)
        stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
        extra: dict[str, float] = dict(pretraining_summary(checkpoint))
        if masks:
            extra.update(log_masking_statistics(pretraining, datasets["train"], stage))
            baselines = reconstruction_baselines(pretraining, checkpoint, datasets["val"])
            stage.log_metrics({f"val/{k}": v for k, v in baselines.items()})
            extra.update(baselines)
            stage.log_image(reconstruction_gallery(pretraining, checkpoint, datasets["val"]),
                            "reconstruction_gallery.png")
        stage.log_artifact(checkpoint / "checkpoint.pt", "checkpoint")
    return checkpoint, extra


def finetune_stages(settings: MimSettings, datasets: dict[str, Any], tracker: Any,
                    trial: Any, tags: dict[str, Any], method: str, checkpoint: Any,
                    modes: Sequence[str], extra: dict[str, float],
                    init_weights: TransferSettings | None = None) -> list[Cell]:
    """Every fine-tuning cell of one initialisation (label fractions x ``modes``), each in its
    own stage run, trained together in one Ray Train run (:func:`finetune_cells`)."""
    specs = [(fraction, mode) for fraction in settings.fractions for mode in modes]
    with contextlib.ExitStack() as stack:
        cells = [FinetuneCell(fraction, mode, stack.enter_context(tracker.stage(
            f"finetune-{mode}-frac{fraction * 100:g}", parent=trial,
            tags={**tags, "fraction": fraction, "mode": mode}))) for fraction, mode in specs]
        outcomes = finetune_cells(settings.finetuning(), datasets, cells, settings.scaling,
                                  checkpoint, init_weights=init_weights,
                                  desc=f"fine-tune {method}")
    out = []
    for (fraction, mode), outcome in zip(specs, outcomes, strict=True):
        if settings.head.multilabel:
            correct = ((outcome.probs > 0.5) == (outcome.targets > 0.5)).mean(1)
        else:
            correct = outcome.correct
        out.append(Cell(method, mode, fraction, settings.seed, outcome.metrics, correct,
                        {**extra, "base_lr": outcome.base_lr}))
    return out


def shortcut_cell(settings: MimSettings, datasets: dict[str, Any], trial: Any,
                  fraction: float) -> Cell:
    """The shortcut baseline on the same labelled images as the fine-tuning cells."""
    subset, _ = label_fraction_subset(datasets["train"], fraction, settings.seed)
    train = subset.select_columns([C.IMAGE, C.LABEL]).take_batch(subset.count(),
                                                                  batch_format="numpy")
    test = datasets["test"].select_columns([C.IMAGE, C.LABEL]).take_batch(
        datasets["test"].count(), batch_format="numpy")
    classes, side = settings.head.num_classes, int(np.asarray(test[C.IMAGE]).shape[-1])
    grid = max(g for g in range(1, SHORTCUT_GRID + 1) if side % g == 0)  # 16 unless it
    probs = shortcut_baseline(np.asarray(train[C.IMAGE]), np.asarray(train[C.LABEL]),
                              np.asarray(test[C.IMAGE]), classes, grid=grid)  # cannot tile
    correct = (probs.argmax(1) == np.asarray(test[C.LABEL])).astype(np.float64)
    accuracy = float(correct.mean())
    trial.log_metrics({f"test/frac{fraction * 100:g}/accuracy": accuracy})
    return Cell(SHORTCUT, "linear", fraction, settings.seed, {"accuracy": accuracy}, correct, {})


RESULT_METRICS = ("accuracy", "macro_f1", "auc_mean")
EXTRA_COLUMNS = ("valid_fraction", "filled_share", "region_fully_masked", "recon_mse",
                 "inpaint_mse", "visible_mean_mse", "step_s", "peak_rss_mb", "peak_gpu_mb",
                 "probe_auc_best", "convergence_epoch")


def results_table(cells: Sequence[Cell]) -> pd.DataFrame:
    """One row per (method, mode, fraction): metric means over seeds, the arm's diagnostics,
    and the paired difference in accuracy to From Scratch at the same mode and fraction (the
    shortcut's against full fine-tuning) with its 95 % bootstrap interval and per-seed values
    (nan where the study has no From Scratch arm)."""
    groups: dict[tuple[str, str, float], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.method, cell.mode, cell.fraction), []).append(cell)
    rows = []
    for (method, mode, fraction), group in groups.items():
        group = sorted(group, key=lambda c: c.seed)
        row: dict[str, Any] = {"method": method, "mode": mode, "fraction": fraction,
                               "seeds": len(group)}
        for metric in RESULT_METRICS:
            values = [c.metrics.get(metric, np.nan) for c in group]
            row[metric] = float(np.mean(values))
        for column in EXTRA_COLUMNS:
            values = [c.extra[column] for c in group if column in c.extra]
            if values:
                row[column] = float(np.mean(values))
        row.update(_difference(group, groups, method, mode, fraction))
        rows.append(row)
    return pd.DataFrame(rows)


def _difference(group: list[Cell], groups: dict[tuple[str, str, float], list[Cell]],
                method: str, mode: str, fraction: float) -> dict[str, Any]:
    reference = groups.get((SCRATCH, "full" if method == SHORTCUT else mode, fraction))
    empty = {"diff_vs_scratch": np.nan, "ci_low": np.nan, "ci_high": np.nan,
             "per_seed_diff": ""}
    if method == SCRATCH or not reference:
        return empty
    by_seed = {c.seed: c for c in reference}
    paired = [(c, by_seed[c.seed]) for c in group if c.seed in by_seed]
    if not paired:
        return empty
    result = paired_bootstrap([a.correct for a, _ in paired], [b.correct for _, b in paired])
    return {"diff_vs_scratch": result.difference, "ci_low": result.low, "ci_high": result.high,
            "per_seed_diff": " / ".join(f"{d:+.3f}" for d in result.per_seed)}


def cell_row(cell: Cell) -> dict[str, Any]:
    """A cell as a flat row of ``cells.csv`` (no per-image arrays)."""
    return {"method": cell.method, "mode": cell.mode, "fraction": cell.fraction,
            "seed": cell.seed, **cell.metrics, **cell.extra}

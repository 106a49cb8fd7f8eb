"""The public stages of every study: pretraining (cached), fine-tuning + test, and AHM's
masking policy (cached) and segmentation fine-tuning (cached).

The studies (:func:`~medmask.train.run_mim_study`, :func:`~medmask.train.run_ahm_study`) and
the sweeps' trials (:mod:`medmask.tune`) call these functions; they build the loop config, fit
a ``TorchTrainer`` of the one epoch-loop skeleton and log what they did to the stage's run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medmask import columns as C
from medmask.data.splits import label_fraction_subsets
from medmask.eval import classification_metrics, inpainting_loss, visible_mean_loss
from medmask.eval.figures import mask_gallery, policy_figure, reward_curve, segmentation_figure
from medmask.masking import apply_patch_mask, epoch_masks, num_masked, patch_validity
from medmask.methods import create_method
from medmask.models import create_model, load_local_weights
from medmask.preprocess import CropToLungs, map_stage
from medmask.train._checkpoint import (
    StageCache,
    code_version,
    load_checkpoint,
    save_checkpoint,
)
from medmask.train._finetune import finetune_cells_loop
from medmask.train._masks import build_mask_strategy, masking_cache_key
from medmask.train._pretrain import pretrain_loop
from medmask.train._probe import PROBE_FIT, PROBE_SCORE
from medmask.train._segment import (
    build_segmenter,
    predict_segmentation,
    score_segmentation,
    segment_loop,
)
from medmask.train._settings import (
    CropSettings,
    FinetuneSettings,
    ModelSettings,
    PolicySettings,
    PretrainSettings,
    SegmentationSettings,
    StageSettings,
    TransferSettings,
)
from medmask.train._trainer import (
    EpochProgress,
    ScalingSettings,
    build_trainer,
    fit_and_load,
    steps_per_epoch,
)

log = logging.getLogger(__name__)

TRAIN_COLUMNS = (C.IMAGE, C.IMAGE_KEY, C.ORGANS, C.LESION, C.LABEL, C.LABELS, C.SUBSET_COPY)
PRETRAIN_SUMMARY = "pretrain_summary.json"  # beside a cached checkpoint: its last report
SUMMARY_METRICS = {"perf/step_s": "step_s", "perf/peak_rss_mb": "peak_rss_mb",
                   "perf/peak_gpu_mb": "peak_gpu_mb", "probe/auc_mean": "probe_auc_last",
                   "probe/best_auc_mean": "probe_auc_best",
                   "probe/convergence_epoch": "convergence_epoch"}
REPORTS = 24  # validations (and checkpoints) per fine-tuning run, at most about


# ------------------------------------------------------------------------------------------
# data


def label_fraction_subset(dataset: Any, fraction: float, seed: int) -> tuple[Any, list[str]]:
    """The nested, class-stratified label fraction of a dataset, and the chosen ids (a seeded
    random nested subset where the dataset has no class label)."""
    labelled = C.LABEL in dataset.schema().names
    table = dataset.select_columns([C.ID, C.LABEL] if labelled else [C.ID]).to_pandas()
    if not labelled:  # segmentation sets (LGG, Decathlon): one group, a random nested subset
        table[C.LABEL] = 0
    keep = set(label_fraction_subsets(table, [fraction], seed=seed)[fraction].tolist())
    if fraction >= 1.0:
        return dataset, sorted(keep)
    from ray.data.expressions import col  # defer: ray

    return dataset.filter(expr=col(C.ID).is_in(sorted(keep))).materialize(), sorted(keep)


def pretraining_images(datasets: dict[str, Any]) -> Any:
    """What pretraining sees: the unlabelled ``pool`` split and the training images (MIM
    pretrains on every image it may; labels are never read), or the training split alone
    where the study has no pool."""
    if C.POOL in datasets:
        return datasets[C.POOL].union(datasets["train"])
    return datasets["train"]


def train_view(dataset: Any) -> Any:
    """Only the numeric columns the loops need (strings cannot become tensors)."""
    names = set(dataset.schema().names)
    return dataset.select_columns([c for c in TRAIN_COLUMNS if c in names])


def lung_cropped(datasets: dict[str, Any], crop: CropSettings | None,
                 stages: Sequence[Any], batch_size: int = 32) -> dict[str, Any]:
    """Every split cropped to its lungs (option 4) when ``crop`` is set, else unchanged; the
    fallbacks (whole image kept) are logged per split as ``data/crop_fallbacks_<split>`` to
    each of the stage runs ``stages``."""
    if crop is None:
        return datasets
    stage_fn = CropToLungs(crop.padding, crop.min_crop_ratio)
    out = {name: map_stage(ds, stage_fn, batch_size).materialize()
           for name, ds in datasets.items()}
    fallbacks = {
        f"data/crop_fallbacks_{name}": float(
            ds.select_columns([C.CROP_FALLBACK]).to_pandas()[C.CROP_FALLBACK].sum())
        for name, ds in out.items()}
    for stage in stages:
        stage.log_metrics(fallbacks)
    return out


# ------------------------------------------------------------------------------------------
# stages


def pretrain_settings(settings: PretrainSettings) -> dict[str, Any]:
    """Everything that determines a pretrained encoder (the cache key): the settings, the
    masking (with the policy file's digest) and the version of the code that defines the
    model, the loss and the masks (:func:`code_version`)."""
    key = dataclasses.asdict(settings)
    for unused in ("cache_dir", "storage_dir"):
        key.pop(unused)
    key["pretrain"].pop("inject_failure", None)
    key["masking"] = masking_cache_key(key["masking"])
    key["code"] = code_version()
    return key


def stage_loop_config(stage_settings: StageSettings, seed: int, rows: int, workers: int,
                      stage: Any) -> dict[str, Any]:
    """The loop-skeleton keys of a Ray Train loop config (plain values, for the workers)."""
    return {
        "optim": dataclasses.asdict(stage_settings.optim),
        "batch_size": stage_settings.batch_size,
        "epochs": stage_settings.epochs,
        "steps_per_epoch": steps_per_epoch(rows, stage_settings.batch_size, workers),
        "seed": seed,
        "mixed_precision": stage_settings.mixed_precision,
        "tracking": {"uri": stage.uri, "run_id": stage.run_id},
    }


def run_pretraining(settings: PretrainSettings, datasets: dict[str, Any], stage: Any,
                    scaling: ScalingSettings, callbacks: Sequence[Any] = ()) -> Path:
    """Pretrain (or reuse the cached checkpoint) and return the checkpoint folder.

    ``callbacks`` go to the ``TorchTrainer`` (Ray Train ``UserCallback`` s).
    """
    cache = StageCache(settings.cache_dir, "pretrain")
    key = pretrain_settings(settings)
    cached = cache.lookup(key)
    stage.set_tags({"cache_hit": cached is not None, "cache_key": cache.entry(key).name})
    if cached is not None:
        log.info("pretraining cache hit: %s", cached)
        stage.log_dict(key, "reused_cache_key.json")
        return cached
    if settings.pretrain.epochs == 0:  # the untrained model: fine-tuning it is From Scratch
        with cache.build(key) as folder:
            write_untrained_checkpoint(settings, folder)
        return cache.entry(key)
    probe = probe_datasets(datasets, settings) if settings.probe.every else {}
    datasets = lung_cropped({"train": pretraining_images(datasets), **probe}, settings.crop,
                            [stage])
    train = train_view(datasets.pop("train")).materialize()
    stage.log_metrics({"data/pretrain_images": float(train.count())})
    loop_config = {
        **stage_loop_config(settings.pretrain, settings.seed, train.count(),
                            scaling.num_workers, stage),
        "method": settings.method,
        "method_params": dict(settings.method_params),
        "crop": dataclasses.asdict(settings.crop) if settings.crop else None,
        "model": dataclasses.asdict(settings.model),
        "masking": dataclasses.asdict(settings.masking),
        "inject_failure": settings.pretrain.inject_failure,
        "probe": dataclasses.asdict(settings.probe),
    }
    probe_views = {k: v.select_columns([C.IMAGE, C.LABELS]).materialize()
                   for k, v in datasets.items()}
    with EpochProgress(f"pretrain {settings.method}/{settings.masking.name}",
                       settings.pretrain.epochs) as progress:
        trainer = build_trainer(
            pretrain_loop, {**loop_config, "progress": progress.queue},
            {"train": train, **probe_views}, scaling=scaling,
            storage_path=Path(settings.storage_dir),
            name=f"pretrain-{cache.entry(key).name}", callbacks=callbacks,
        )
        start = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - start
    if result.checkpoint is None:
        raise RuntimeError(f"pretraining reported no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as directory:
        entry = cache.store(key, directory)
    summary = {name: float(result.metrics[k]) for k, name in SUMMARY_METRICS.items()
               if k in result.metrics}
    summary["pretrain_wall_s"] = wall  # the fit, its Ray Train launch included
    (entry / PRETRAIN_SUMMARY).write_text(json.dumps(summary))
    return entry


def masks_patches(method: str) -> bool:
    """Whether ``method`` is masked image modeling (it draws patch masks; a reconstruction
    gallery and the inpainting baselines apply to it)."""
    return create_method(method).uses_masks


def probe_datasets(datasets: dict[str, Any], settings: PretrainSettings) -> dict[str, Any]:
    """The convergence probe's images: the training split's first ``images // 2`` (fitted)
    and the validation split's first ``images // 2`` (scored), with their findings."""
    if C.LABELS not in datasets["train"].schema().names:
        raise ValueError("the convergence probe reads the multi-label findings (the 'labels' "
                         "column: head=findings); set probe.every=0 for this dataset")
    half = max(1, settings.probe.images // 2)
    return {PROBE_FIT: datasets["train"].limit(half), PROBE_SCORE: datasets["val"].limit(half)}


def pretraining_summary(checkpoint: Path) -> dict[str, float]:
    """What a pretraining run's last report said, by :data:`SUMMARY_METRICS`' short names
    (step time, peak memory, the probe's last and best mean AUC and convergence epoch), and
    its ``TorchTrainer.fit`` wall seconds (``pretrain_wall_s``, the launch included); {} for
    entries written without it (0 epochs)."""
    path = Path(checkpoint) / PRETRAIN_SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass(frozen=True)
class FinetuneOutcome:
    """What one fine-tuning cell produced.

    Attributes:
        metrics: test metrics (accuracy, macro_f1, auc_mean, ...).
        probs, targets: per test image, the predicted probabilities [n, K] and the labels
            (class ids, or multi-hot rows): what paired bootstrap intervals resample.
        base_lr: the selected learning rate of the lr grid.
        val_score: the selected epoch's validation ``select_on`` score (nan: no selection).
        grid: ``{base_lr: val_score}`` of every lr tried.
    """

    metrics: dict[str, float]
    probs: np.ndarray
    targets: np.ndarray
    base_lr: float
    val_score: float
    grid: dict[float, float]

    @property
    def correct(self) -> np.ndarray:
        """Per test image, 1.0 where the top class is the label (single-label heads)."""
        return (self.probs.argmax(1) == self.targets).astype(np.float64)


def write_untrained_checkpoint(settings: PretrainSettings, directory: Path) -> None:
    """Write the model as the loops initialise it (``torch.manual_seed(seed)`` then the
    registry's constructor) as a checkpoint: 0 pretraining epochs, so that fine-tuning from it
    is exactly From Scratch."""
    torch.manual_seed(settings.seed)
    model = create_model(settings.model.name, **settings.model.params)
    save_checkpoint(directory, {"model": model.state_dict(), "epoch": -1,
                                "model_name": settings.model.name,
                                "model_params": dict(settings.model.params)})


def run_finetuning(settings: FinetuneSettings, datasets: dict[str, Any], stage: Any,
                   scaling: ScalingSettings, pretrained: Path | None, fraction: float,
                   mode: str, init_weights: TransferSettings | None = None,
                   callbacks: Sequence[Any] = ()) -> dict[str, float]:
    """Fine-tune on a label fraction, then evaluate on the test split; returns test metrics
    (:func:`finetune_cell` has the per-image predictions and the lr selection)."""
    return finetune_cell(settings, datasets, stage, scaling, pretrained, fraction, mode,
                         init_weights, callbacks).metrics


def finetune_cell(settings: FinetuneSettings, datasets: dict[str, Any], stage: Any,
                  scaling: ScalingSettings, pretrained: Path | None, fraction: float,
                  mode: str, init_weights: TransferSettings | None = None,
                  callbacks: Sequence[Any] = ()) -> FinetuneOutcome:
    """Fine-tune on a label fraction at every lr of the recipe's grid, keep the lr (and,
    within a run, the epoch) with the best validation score, and evaluate that model on the
    test split: :func:`finetune_cells` with one cell.

    ``pretrained`` is a pretraining checkpoint folder; ``init_weights`` a local weights file
    for the Transfer baseline (what loaded is logged as ``transfer_weights.json``); neither =
    From Scratch. ``callbacks`` go to the ``TorchTrainer`` (Ray Train ``UserCallback`` s).
    The grid's scores are logged as ``val/lr_grid.json``; the selection as ``val/base_lr``.
    """
    return finetune_cells(settings, datasets, [FinetuneCell(fraction, mode, stage)], scaling,
                          pretrained, init_weights, callbacks)[0]


@dataclass(frozen=True)
class FinetuneCell:
    """One cell of :func:`finetune_cells`: a label fraction, ``full`` fine-tuning or
    ``linear_probe``, and the stage run its metrics and artifacts go to."""

    fraction: float
    mode: str
    stage: Any


def finetune_cells(settings: FinetuneSettings, datasets: dict[str, Any],
                   cells: Sequence[FinetuneCell], scaling: ScalingSettings,
                   pretrained: Path | None, init_weights: TransferSettings | None = None,
                   callbacks: Sequence[Any] = (), desc: str | None = None
                   ) -> list[FinetuneOutcome]:
    """Fine-tune one initialisation on several cells (label fractions x modes, each at every
    lr of the recipe's grid) in ONE Ray Train run (:func:`finetune_cells_loop`): a
    ``TorchTrainer`` launch costs 15-30 s on 2 CPUs, a large share of a quick cell's 30-90 s.
    Each (cell, lr) trains as it would alone (seeded afresh, its own optimizer, schedule and
    step budget); rank 0 predicts the test split with its selected epoch. Per cell, the lr
    with the best validation score is kept (the first on ties), and its test metrics, the
    label-fraction ids, the lr grid's scores and the selection go to the cell's stage run.

    Returns one :class:`FinetuneOutcome` per cell, in order.
    """
    if not cells:
        return []
    stages = [cell.stage for cell in cells]
    datasets = lung_cropped({k: datasets[k] for k in ("train", "val", "test")}, settings.crop,
                            stages)
    fractions = list(dict.fromkeys(cell.fraction for cell in cells))
    head, recipe = settings.head, settings.recipe
    train: dict[str, Any] = {}
    repeats: dict[str, int] = {}
    for k, fraction in enumerate(fractions):
        subset, ids = label_fraction_subset(datasets["train"], fraction, settings.seed)
        key, view = f"train_{k}", train_view(subset).materialize()
        repeats[key] = subset_repeats(settings.finetune.epochs, recipe.min_steps, view.count(),
                                      settings.finetune.batch_size, scaling.num_workers)
        train[key] = repeated(view, repeats[key]).materialize()
        for cell in cells:
            if cell.fraction == fraction:
                cell.stage.log_dict({"fraction": fraction, "ids": ids},
                                    "label_fraction_ids.json")
                cell.stage.log_metrics({"data/train_images": len(ids),
                                        "data/subset_repeats": repeats[key]})
    rows = {key: ds.count() for key, ds in train.items()}
    transfer = init_weights if init_weights and init_weights.weights else None
    if transfer is not None:
        report = transfer_report(settings.model, transfer)
        for stage in stages:
            stage.log_dict(dataclasses.asdict(report), "transfer_weights.json")
            stage.set_tags({"transfer_weights": report.summary()})
    rates = [float(r) for r in (recipe.lr_grid or (settings.finetune.optim.base_lr,))]
    if len(rates) > 1 and not recipe.select_on:
        raise ValueError(f"recipe.lr_grid {rates} needs recipe.select_on (the validation "
                         "metric that picks the learning rate)")
    loop_cells, index = [], []
    for position, cell in enumerate(cells):
        key = f"train_{fractions.index(cell.fraction)}"
        for base_lr in rates:
            stage_settings = dataclasses.replace(
                settings.finetune,
                optim=dataclasses.replace(settings.finetune.optim, base_lr=base_lr))
            loop_cell = {
                **stage_loop_config(stage_settings, settings.seed, rows[key],
                                    scaling.num_workers, cell.stage),
                "train": key, "mode": cell.mode, "subset_repeats": repeats[key],
                # many short epochs (a 10 % fraction): validate and checkpoint ~REPORTS times
                "report_every": max(1, stage_settings.epochs // REPORTS),
            }
            if len(rates) > 1:  # one MLflow curve per lr: the stage's run is shared
                loop_cell["tracking"] = None
            loop_cells.append(loop_cell)
            index.append((position, base_lr))
    shared = {
        "model": dataclasses.asdict(settings.model),
        "pretrained": str(pretrained) if pretrained else None,
        "init_weights": dataclasses.asdict(transfer) if transfer else None,
        "head": dataclasses.asdict(head),
        "recipe": dataclasses.asdict(recipe),
        "shuffle_buffer": recipe.shuffle_buffer,
        "select_on": recipe.select_on,
        "inject_failure": settings.finetune.inject_failure,
    }
    # materialized before the run: inside it, a lazy projection would wait for a CPU that the
    # Train workers (and, in a sweep, the other trials' workers) hold
    test = train_view(datasets["test"]).materialize()
    with EpochProgress(desc or stages[0].name, sum(c["epochs"] for c in loop_cells)
                       ) as progress:
        trainer = build_trainer(
            finetune_cells_loop, {**shared, "cells": loop_cells, "progress": progress.queue},
            {**train, "val": train_view(datasets["val"]).materialize(), "test": test},
            scaling=scaling, storage_path=Path(settings.storage_dir),
            name=f"finetune-{stages[0].run_id[:8]}", split_datasets=tuple(train),
            callbacks=callbacks)
        results = fit_cells(trainer, len(loop_cells), "fine-tuning")
    outcomes = []
    for position, cell in enumerate(cells):
        best: tuple[float, float, dict[str, Any]] | None = None
        grid: dict[float, float] = {}
        for result, (owner, base_lr) in zip(results, index, strict=True):
            if owner != position:
                continue
            score = float("nan") if result["val_score"] is None else float(result["val_score"])
            grid[base_lr] = score
            if best is None or (not np.isnan(score) and not score <= best[1]):
                best = (base_lr, score, result)
        assert best is not None  # rates is never empty
        base_lr, score, result = best
        if len(rates) > 1:
            cell.stage.log_dict({str(k): v for k, v in grid.items()}, "val/lr_grid.json")
        probs, targets = result["probs"].numpy(), result["targets"].numpy()
        metrics = classification_metrics(probs, targets, multilabel=head.multilabel,
                                         class_names=head.class_names)
        numeric = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, int | float | np.number)}
        cell.stage.log_metrics({**{f"test/{k}": v for k, v in numeric.items()},
                                "val/base_lr": base_lr,
                                **({f"val/selected_{recipe.select_on}": score}
                                   if recipe.select_on else {})})
        outcomes.append(FinetuneOutcome(numeric, probs, targets, base_lr, score, grid))
    return outcomes


def fit_cells(trainer: Any, count: int, what: str) -> list[dict[str, Any]]:
    """Run a :func:`~medmask.train._loop.run_cells` trainer; every cell's result, in order,
    from its last checkpoint.

    Raises:
        RuntimeError: the run reported no checkpoint, or not every cell's result (with Ray's
            error, if any).
    """
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{what} reported no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as directory:
        done = load_checkpoint(directory).get("cells_done") or {}
    missing = [i for i in range(count) if i not in done]
    if missing:
        raise RuntimeError(f"{what} finished without the results of cells {missing} of "
                           f"{count} (error: {result.error})")
    return [done[i] for i in range(count)]


def subset_repeats(epochs: int, min_steps: int, rows: int, batch_size: int, workers: int
                   ) -> int:
    """How many copies of a small labelled subset of ``rows`` images one epoch passes over so
    that ``epochs`` epochs take at least ``min_steps`` optimizer steps (the fewest that do).

    A 10 % label fraction of 512 images is 2 steps an epoch: raising the epochs to reach the
    step budget costs an epoch's data iteration, report and validation per 2 steps, where
    repeating the subset inside the epoch keeps the epochs, and with them the warm-up share,
    the validation and the checkpoints, where they are. Each copy gets its own augmented view
    (:func:`repeated`, :func:`~medmask.train._finetune.augmented_images`)."""
    need = -(-int(min_steps) // max(int(epochs), 1))  # optimizer steps per epoch
    count = 1
    while steps_per_epoch(rows * count, batch_size, workers) < need:
        count += 1
    return count


def repeated(dataset: Any, count: int) -> Any:
    """``dataset`` ``count`` times over, each copy's rows tagged with its index in column
    ``subset_copy`` (0 .. count - 1); ``dataset`` itself when ``count`` is 1."""
    if count <= 1:
        return dataset
    from ray.data.expressions import lit  # defer: ray

    copies = [dataset.with_column(C.SUBSET_COPY, lit(c)) for c in range(count)]
    return copies[0].union(*copies[1:])


def transfer_report(model: ModelSettings, init_weights: TransferSettings) -> Any:
    """What a Transfer weights file loads into the encoder (fails fast, before training)."""
    encoder = create_model(model.name, **model.params)
    return load_local_weights(encoder, str(init_weights.weights), init_weights.prefix)


MASK_STAT_ROWS = 512  # images the per-epoch masking statistics are computed on


def masking_statistics(settings: PretrainSettings, dataset: Any,
                       rows: int = MASK_STAT_ROWS) -> list[dict[str, float]]:
    """Per pretraining epoch, what the masks do to the region (lungs) on up to ``rows``
    images, with the same keyed masks the loop draws: ``valid_fraction`` (share of the patches
    that overlap the region), ``filled_share`` (share of the masked patches outside it) and
    ``region_fully_masked`` (share of images with no region patch left visible: then the
    encoder never sees a lung token). Empty without organ maps or masks."""
    if not create_method(settings.method).uses_masks:
        return []
    batch = train_view(dataset).take_batch(rows, batch_format="numpy")
    if C.ORGANS not in batch:
        return []
    model = create_model(settings.model.name, **settings.model.params)
    grid, ratio = model.grid, settings.masking.ratio
    strategy = build_mask_strategy(dataclasses.asdict(settings.masking))
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}
    valid = patch_validity(tensors[C.ORGANS], grid,
                           tuple(settings.masking.params.get("valid_labels", C.LUNG_LABELS)),
                           float(settings.masking.params.get("min_overlap", 0.0)))
    count = max(num_masked(grid.num_patches, ratio), 1)
    out = []
    for epoch in range(settings.pretrain.epochs):
        mask = epoch_masks(strategy, tensors, grid, ratio, seed=settings.seed, epoch=epoch)
        out.append({
            "valid_fraction": float(valid.float().mean()),
            "filled_share": float(((mask & ~valid).sum(1) / count).mean()),
            "region_fully_masked": float(((valid & ~mask).sum(1) == 0).float().mean()),
        })
    return out


def log_masking_statistics(settings: PretrainSettings, dataset: Any, stage: Any
                           ) -> dict[str, float]:
    """:func:`masking_statistics` logged per epoch (``train/valid_fraction``, ...) with a
    warning when the region is fully masked in most images; returns the epochs' means."""
    per_epoch = masking_statistics(settings, dataset)
    for epoch, values in enumerate(per_epoch):
        stage.log_metrics({f"train/{k}": v for k, v in values.items()}, step=epoch)
    if not per_epoch:
        return {}
    means = {k: float(np.mean([v[k] for v in per_epoch])) for k in per_epoch[0]}
    if means["region_fully_masked"] > 0.5:
        log.warning(
            "masking=%s at ratio %g masks every lung patch in %.0f%% of the images (valid "
            "fraction %.2f, %.0f%% of the masked patches lie outside the lungs): the encoder "
            "never sees a lung token there. Lower the ratio or set "
            "masking.params.region_priority (1 = random masking).", settings.masking.name,
            settings.masking.ratio, 100 * means["region_fully_masked"],
            means["valid_fraction"], 100 * means["filled_share"])
    return means


@torch.no_grad()
def reconstruction_baselines(settings: PretrainSettings, checkpoint: Path, dataset: Any,
                             rows: int = 256) -> dict[str, float]:
    """The pretrained model's masked-pixel MSE on up to ``rows`` images of ``dataset`` against
    two zero-parameter predictions on the same masks (epoch-0 masks of the study seed): the
    visible mean and Gaussian inpainting (sigma = one patch side). A model that does not beat
    inpainting has learned to interpolate only. Empty for methods without masks."""
    if not create_method(settings.method).uses_masks:
        return {}
    model = create_model(settings.model.name, **settings.model.params)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.eval()
    batch = train_view(dataset).take_batch(rows, batch_format="numpy")
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}
    images = tensors[C.IMAGE].float()[:, None]
    grid = model.grid
    strategy = build_mask_strategy(dataclasses.asdict(settings.masking))
    mask = epoch_masks(strategy, tensors, grid, settings.masking.ratio, seed=settings.seed,
                       epoch=0)
    hidden = apply_patch_mask(torch.ones_like(images), grid, mask) == 0
    prediction = model(images, mask).prediction.float()
    model_mse = ((prediction - images).square() * hidden).sum((1, 2, 3)) / hidden.sum(
        (1, 2, 3)).clamp_min(1)
    return {
        "recon_mse": float(model_mse.mean()),
        "visible_mean_mse": float(visible_mean_loss(images, hidden).mean()),
        "inpaint_mse": float(inpainting_loss(images, hidden, sigma=float(grid.patch_h)).mean()),
    }


def reconstruction_gallery(settings: PretrainSettings, checkpoint: Path, dataset: Any,
                           count: int = 4) -> np.ndarray:
    """Original / masked / reconstruction of a few images (uint8 RGB gallery)."""
    model = create_model(settings.model.name, **settings.model.params)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.eval()
    rows = train_view(dataset).take_batch(count, batch_format="numpy")
    images = torch.from_numpy(np.array(rows[C.IMAGE], dtype=np.float32))[:, None]
    strategy = build_mask_strategy(dataclasses.asdict(settings.masking))
    batch = {k: torch.from_numpy(np.array(v)) for k, v in rows.items()}  # writable copies
    mask = strategy(batch, model.grid, settings.masking.ratio,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prediction = model(images, mask).prediction.clamp(0, 1)
    masked = apply_patch_mask(images, model.grid, mask)
    return mask_gallery([images[:, 0].numpy(), masked[:, 0].numpy(),
                         prediction[:, 0].numpy()])


# ------------------------------------------------------------------------------------------
# the AHM stages: the masking policy and segmentation fine-tuning


SEGMENT_COLUMNS = (C.IMAGE, C.LESION, C.ORGANS)
SEGMENT_RESULTS = ("dice", "iou", "ppv", "sensitivity", "hd95", "boundary_iou",
                   "hd95_nan_count")


def load_reconstruction(checkpoint: str) -> torch.nn.Module:
    """The frozen reconstruction network of a pretraining checkpoint (a picklable factory for
    remote EnvRunners: ``functools.partial(load_reconstruction, path)``)."""
    state = load_checkpoint(checkpoint)
    model = create_model(state["model_name"], **state.get("model_params", {}))
    model.load_state_dict(state["model"])
    return model.eval().requires_grad_(False)


def dataset_images(dataset: Any, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """Images of a Ray dataset as float32 [M, H, W], ordered by id; at most ``limit`` of them
    (a seeded random sample: the policy's image pool need not hold a whole real dataset)."""
    table = dataset.select_columns([C.ID, C.IMAGE]).to_pandas().sort_values(C.ID)
    if limit and len(table) > int(limit):
        table = table.sample(n=int(limit), random_state=seed).sort_values(C.ID)
    return np.stack(table[C.IMAGE].to_numpy()).astype(np.float32)


def policy_cache_key(policy: PolicySettings, ratio: float, seed: int,
                     reconstruction: PretrainSettings) -> dict[str, Any]:
    """What determines a trained policy: its settings, the masking ratio, the seed and the
    reconstruction network's own cache key."""
    return {"reconstruction": pretrain_settings(reconstruction),
            "policy": dataclasses.asdict(policy), "ratio": float(ratio), "seed": int(seed)}


def run_policy_training(policy: PolicySettings, ratio: float, seed: int, cache_dir: str,
                        reconstruction_settings: PretrainSettings, reconstruction: Path,
                        train_images: np.ndarray, heldout: np.ndarray, stage: Any
                        ) -> tuple[Path, dict[str, float]]:
    """Train (or reuse the cached) masking policy; returns its cache folder (``policy.pt``,
    ``history.csv``) and the diagnostics on the held-out images. The policy masks the patch
    grid of the reconstruction network (a ViT's patch size, not a layout from the count).

    Training checkpoints into ``<entry>.training`` (an interrupted run resumes there); the
    finished policy is stored atomically (:class:`StageCache`). ``policy.checkpoint`` reuses a
    policy trained elsewhere (AHM's transfer study) instead of training.
    """
    from medmask import rl  # defer: ray.rllib

    cache = StageCache(cache_dir, "policy")
    key = policy_cache_key(policy, ratio, seed, reconstruction_settings)
    folder = cache.lookup(key)
    stage.set_tags({"cache_hit": folder is not None, "cache_key": cache.entry(key).name})
    if folder is None and policy.checkpoint:
        stage.set_tags({"policy_source": str(policy.checkpoint)})
        with cache.build(key) as partial:
            rl.save_policy(rl.load_policy(policy.checkpoint), partial)
            pd.DataFrame(columns=["iteration", rl.REWARD, rl.ENV_STEPS]).to_csv(
                partial / "history.csv", index=False)
        folder = cache.entry(key)
    elif folder is None:
        import ray  # defer: ray

        import envs  # defer: ray.rllib (the environment's registration)

        budget = rl.PolicyBudget(**{**dataclasses.asdict(policy.budget), "images_per_epoch": (
            policy.budget.images_per_epoch or len(train_images))})  # an epoch = the pool
        network = functools.partial(load_reconstruction, str(reconstruction))
        gpus = ray.cluster_resources().get("GPU", 0)
        server = (envs.start_reward_server(network, num_gpus=1 if gpus >= 1 else 0)
                  if policy.reward_server == "on" or (policy.reward_server == "auto"
                                                      and gpus >= 1) else None)
        stage.set_tags({"reward_server": server is not None})
        env_config = {"reconstruction": server.client if server else network,
                      "images": train_images}
        algo_config = rl.ahm_appo_config(
            envs.ENV_ID, env_config, mask_ratio=float(ratio),
            images_per_epoch=budget.images_per_epoch, max_epochs=budget.max_epochs,
            seed=int(seed), patch_size=network().grid.patch_size,  # the network's own grid
            **policy.appo_options())
        work = cache.entry(key).with_name(cache.entry(key).name + ".training")
        work.mkdir(parents=True, exist_ok=True)  # a short budget may end before a checkpoint
        try:
            net, history = rl.train_policy(
                algo_config, budget, checkpoint_dir=work,
                on_iteration=lambda i, metrics: stage.log_metrics(metrics, step=i))
        finally:
            if server is not None:
                stage.log_dict(server.stats(), "reward_server.json")
                server.stop()
        with cache.build(key) as partial:
            history.to_csv(partial / "history.csv", index=False)
            rl.save_policy(net, partial)
        shutil.rmtree(work, ignore_errors=True)  # only needed to resume training
        folder = cache.entry(key)
    history = pd.read_csv(folder / "history.csv")
    net = rl.load_policy(folder)
    check = rl.policy_diagnostics(
        net, load_reconstruction(str(reconstruction)), train_images,
        heldout[:policy.eval_images or len(heldout)], ratio=float(ratio),
        random_share=policy.random_share, seed=int(seed))
    stage.log_metrics(check)
    stage.log_artifact(folder / "policy.pt", "policy")
    stage.log_table(history, "reward_history.csv")
    stage.log_figure(reward_curve(history, x=rl.ENV_STEPS, y=rl.REWARD), "reward_curve.png")
    stage.log_image(policy_figure(net, heldout[:4], float(ratio), policy.random_share),
                    "ahm_fig8.png")
    return folder, check


def segment_view(dataset: Any) -> Any:
    """The segmentation columns (image, lesion, organs) a dataset has."""
    names = set(dataset.schema().names)
    return dataset.select_columns([c for c in SEGMENT_COLUMNS if c in names])


def segmentation_repeats(epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    """How many times an epoch passes over a small labelled subset so that training takes at
    least ``min_steps`` optimizer steps (a fixed step budget: 10% of the labels over the same
    epochs would train ten times fewer steps and compare under-trained models). Repeating
    inside an epoch, rather than adding epochs, keeps the per-epoch validation, checkpoint and
    learning-rate decay (AHM: every 3 epochs) where they are."""
    total = max(int(epochs), 1) * max(int(steps_per_epoch), 1)
    return max(1, -(-int(min_steps) // total))


def segmentation_cache_key(settings: SegmentationSettings, encoder: dict[str, Any] | None,
                           fraction: float, model: ModelSettings, data: Any, seed: int
                           ) -> dict[str, Any]:
    """What determines a segmentation score: the encoder's pretraining key (None = From
    Scratch), the fine-tuning settings, the label fraction, the model, the data and the seed."""
    return {"encoder": encoder, "segmentation": dataclasses.asdict(settings),
            "fraction": float(fraction), "model": dataclasses.asdict(model), "data": dict(data),
            "seed": int(seed)}


def run_segmentation(settings: SegmentationSettings, model: ModelSettings, seed: int,
                     cache_dir: str, storage_dir: str, datasets: dict[str, Any], stage: Any,
                     scaling: ScalingSettings, pretrained: Path | None, fraction: float,
                     key: dict[str, Any]) -> dict[str, float]:
    """Fine-tune a U-Net segmenter on a label fraction from ``pretrained`` (None = From
    Scratch) and score it on the test split; the scores are cached under ``key``
    (:func:`segmentation_cache_key`)."""
    cache = StageCache(cache_dir, "segment")
    cached = cache.lookup(key)
    stage.set_tags({"cache_hit": cached is not None, "cache_key": cache.entry(key).name})
    if cached is not None:
        metrics = json.loads((cached / "metrics.json").read_text())
        stage.log_metrics({f"test/{k}": v for k, v in metrics.items()})
        return metrics
    subset, ids = label_fraction_subset(datasets["train"], fraction, seed)
    stage.log_dict({"fraction": fraction, "ids": ids}, "label_fraction_ids.json")
    train = segment_view(subset).materialize()
    steps = steps_per_epoch(train.count(), settings.batch_size, scaling.num_workers)
    repeats = segmentation_repeats(settings.epochs, settings.min_steps, steps)
    if repeats > 1:
        train = train.union(*[train] * (repeats - 1)).materialize()
    stage_settings = StageSettings(settings.epochs, settings.batch_size, settings.optim,
                                   settings.mixed_precision)
    loop_config = {
        **stage_loop_config(stage_settings, seed, train.count(), scaling.num_workers, stage),
        "model": dataclasses.asdict(model), "pretrained": str(pretrained) if pretrained else None,
        "target": settings.target,
    }
    stage.log_metrics({"data/train_images": len(ids), "data/subset_repeats": repeats,
                       "perf/steps_per_epoch": loop_config["steps_per_epoch"]})
    with EpochProgress(stage.name, settings.epochs) as progress:
        trainer = build_trainer(segment_loop, {**loop_config, "progress": progress.queue},
                                {"train": train, "val": segment_view(datasets["val"])},
                                scaling=scaling, storage_path=Path(storage_dir),
                                name=f"segment-{cache.entry(key).name}")
        segmenter = fit_and_load(trainer, build_segmenter({**loop_config, "pretrained": None}),
                                 "segmentation fine-tuning")
    images, preds, targets = predict_segmentation(segmenter, segment_view(datasets["test"]),
                                                  settings.target, 64)
    metrics = score_segmentation(preds, targets, segmenter.num_classes)
    stage.log_metrics({f"test/{k}": v for k, v in metrics.items()})
    stage.log_image(segmentation_figure(images[:4], targets[:4], preds[:4]),
                    "segmentation_gallery.png")
    with cache.build(key) as partial:
        (partial / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics

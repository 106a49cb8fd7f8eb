"""Pretrain -> fine-tune -> evaluate: the masked-image-modeling study behind mae.py/rgmim.py.

One function, :func:`run_mim_study`, drives every stage from a plain settings dict (the
experiments convert their Hydra config), with the run tree study -> trial -> stage in MLflow.
Pretraining checkpoints are cached by a hash of everything that determines them, so fine-tuning
at several label fractions, and later sweeps, reuse one pretraining run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medmask import columns as C
from medmask.data.splits import label_fraction_subsets
from medmask.eval import classification_metrics
from medmask.eval.figures import mask_gallery
from medmask.masking import apply_patch_mask
from medmask.models import create_model, load_local_weights
from medmask.preprocess import study_splits
from medmask.tracking import run_name
from medmask.train._checkpoint import PretrainCache, load_checkpoint
from medmask.train._finetune import build_classifier, finetune_loop, predict
from medmask.train._loop_utils import quiet_data_progress
from medmask.train._masks import build_mask_strategy, masking_cache_key
from medmask.train._pretrain import pretrain_loop
from medmask.train._trainer import (
    ScalingSettings,
    build_trainer,
    fit_and_load,
    steps_per_epoch,
)

log = logging.getLogger(__name__)

TRAIN_COLUMNS = (C.IMAGE, "image_key", C.ORGANS, C.LABEL, C.LABELS)


# ------------------------------------------------------------------------------------------
# data


def phantom_splits(data: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train/val/test phantom datasets: disjoint index ranges of one phantom seed."""
    return study_splits({**data, "name": "phantom"}, seed)


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
    return dataset.filter(lambda row: row[C.ID] in keep).materialize(), sorted(keep)


def train_view(dataset: Any) -> Any:
    """Only the numeric columns the loops need (strings cannot become tensors)."""
    names = set(dataset.schema().names)
    return dataset.select_columns([c for c in TRAIN_COLUMNS if c in names])


# ------------------------------------------------------------------------------------------
# stages


def pretrain_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines a pretrained encoder (the cache key)."""

    keys = ("model", "pretrain", "data", "seed")
    return {**{k: settings[k] for k in keys}, "masking": masking_cache_key(settings["masking"])}


def run_pretraining(settings: dict[str, Any], datasets: dict[str, Any], stage: Any,
                    scaling: ScalingSettings, callbacks: Sequence[Any] = ()) -> Path:
    """Pretrain (or reuse the cached checkpoint) and return the checkpoint folder.

    ``callbacks`` go to the ``TorchTrainer`` (Ray Train ``UserCallback`` s).
    """

    cache = PretrainCache(Path(settings["cache_dir"]) / "pretrain")
    key = pretrain_settings(settings)
    cached = cache.lookup(key)
    stage.set_tags({"cache_hit": cached is not None, "cache_key": cache.entry(key).name})
    if cached is not None:
        log.info("pretraining cache hit: %s", cached)
        return cached
    train = train_view(datasets["train"]).materialize()
    pretrain = settings["pretrain"]
    workers = scaling.num_workers
    loop_config = {
        "model": settings["model"],
        "masking": settings["masking"],
        "optim": pretrain["optim"],
        "batch_size": int(pretrain["batch_size"]),
        "epochs": int(pretrain["epochs"]),
        "steps_per_epoch": steps_per_epoch(train.count(), int(pretrain["batch_size"]), workers),
        "seed": int(settings["seed"]),
        "mixed_precision": bool(pretrain.get("mixed_precision", True)),
        "tracking": {"uri": stage.uri, "run_id": stage.run_id},
        "inject_failure": pretrain.get("inject_failure"),
    }
    trainer = build_trainer(
        pretrain_loop, loop_config, {"train": train}, scaling=scaling,
        storage_path=Path(settings["storage_dir"]), name=f"pretrain-{cache.entry(key).name}",
        callbacks=callbacks,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"pretraining reported no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as directory:
        entry = cache.store(key, directory)
    return entry


def run_finetuning(settings: dict[str, Any], datasets: dict[str, Any], stage: Any,
                   scaling: ScalingSettings, pretrained: Path | None, fraction: float,
                   mode: str, init_weights: dict[str, Any] | None = None,
                   callbacks: Sequence[Any] = ()) -> dict[str, float]:
    """Fine-tune on a label fraction, then evaluate on the test split; returns test metrics.

    ``pretrained`` is a pretraining checkpoint folder; ``init_weights`` ({weights, prefix}) a
    local weights file for the Transfer baseline (what loaded is logged as
    ``transfer_weights.json``); neither = From Scratch. ``callbacks`` go to the
    ``TorchTrainer`` (Ray Train ``UserCallback`` s).
    """

    subset, ids = label_fraction_subset(datasets["train"], fraction, int(settings["seed"]))
    stage.log_dict({"fraction": fraction, "ids": ids}, "label_fraction_ids.json")
    train = train_view(subset).materialize()
    finetune = settings["finetune"]
    head = settings["head"]
    loop_config = {
        "model": settings["model"],
        "pretrained": str(pretrained) if pretrained else None,
        "init_weights": init_weights,
        "mode": mode,
        "head": head,
        "optim": finetune["optim"],
        "batch_size": int(finetune["batch_size"]),
        "epochs": int(finetune["epochs"]),
        "steps_per_epoch": steps_per_epoch(train.count(), int(finetune["batch_size"]),
                                           scaling.num_workers),
        "seed": int(settings["seed"]),
        "mixed_precision": bool(finetune.get("mixed_precision", True)),
        "tracking": {"uri": stage.uri, "run_id": stage.run_id},
    }
    if init_weights and init_weights.get("weights"):
        report = transfer_report(settings["model"], init_weights)
        stage.log_dict(dataclasses.asdict(report), "transfer_weights.json")
        stage.set_tags({"transfer_weights": report.summary()})
    val = train_view(datasets["val"]).materialize()
    trainer = build_trainer(
        finetune_loop, loop_config, {"train": train, "val": val}, scaling=scaling,
        storage_path=Path(settings["storage_dir"]), name=f"finetune-{stage.run_id[:8]}",
        callbacks=callbacks,
    )
    model = fit_and_load(trainer, build_classifier({**loop_config, "pretrained": None,
                                                    "init_weights": None}), "fine-tuning")
    test = train_view(datasets["test"])
    multilabel = bool(head.get("multilabel", False))
    probs, targets = predict(model, test, 64, multilabel)
    metrics = classification_metrics(probs, targets, multilabel=multilabel,
                                     class_names=head.get("class_names"))
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number)}
    stage.log_metrics({f"test/{k}": v for k, v in numeric.items()})
    return numeric


def transfer_report(model: dict[str, Any], init_weights: dict[str, Any]) -> Any:
    """What a Transfer weights file loads into the encoder (fails fast, before training)."""

    encoder = create_model(model["name"], **model.get("params", {}))
    return load_local_weights(encoder, init_weights["weights"], init_weights.get("prefix", ""))


def reconstruction_gallery(settings: dict[str, Any], checkpoint: Path, dataset: Any,
                           count: int = 4) -> np.ndarray:
    """Original / masked / reconstruction of a few images (uint8 RGB gallery)."""

    model = create_model(settings["model"]["name"], **settings["model"].get("params", {}))
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.eval()
    rows = train_view(dataset).take_batch(count, batch_format="numpy")
    images = torch.from_numpy(np.array(rows[C.IMAGE], dtype=np.float32))[:, None]
    masking = settings["masking"]
    strategy = build_mask_strategy(masking)
    batch = {k: torch.from_numpy(np.asarray(v)) for k, v in rows.items()}
    mask = strategy(batch, model.grid, float(masking["ratio"]),
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prediction = model(images, mask).prediction.clamp(0, 1)
    masked = apply_patch_mask(images, model.grid, mask)
    return mask_gallery([images[:, 0].numpy(), masked[:, 0].numpy(),
                         prediction[:, 0].numpy()])


# ------------------------------------------------------------------------------------------
# the study


def baseline_methods(baselines: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """The baselines fine-tuned without masked pretraining: From Scratch (random init, on by
    default) and Transfer (a local weights file, when ``transfer.weights`` is set)."""
    methods: list[tuple[str, dict[str, Any] | None]] = []
    if baselines.get("from_scratch", True):
        methods.append(("scratch", None))
    transfer = baselines.get("transfer") or {}
    if transfer.get("weights"):
        methods.append(("transfer", dict(transfer)))
    return methods


def run_mim_study(settings: dict[str, Any], tracker: Any) -> pd.DataFrame:
    """Pretrain with ``settings['masking']``, fine-tune at each label fraction and compare
    with the From Scratch baseline trained with the same budget.

    Returns the results table (one row per method x fraction x mode), also logged as CSV.
    """

    quiet_data_progress()  # the stages report per epoch; per-iteration data bars drown them
    seed = int(settings["seed"])
    scaling = ScalingSettings(**settings["scaling"])
    datasets = {k: v.materialize() for k, v in study_splits(settings["data"], seed).items()}
    masking = settings["masking"]
    tags = {"strategy": masking["name"], "ratio": masking["ratio"],
            "dataset": settings["data"]["name"],
            "seed": seed, "model": settings["model"]["name"]}
    rows = []
    trial_name = run_name(masking["name"], ratio=masking["ratio"], seed=seed)
    study_name = f"{settings['study']}-{trial_name}"
    with tracker.study(study_name, tags=tags) as study:
        study.log_params(settings)
        with tracker.trial(trial_name, parent=study, tags=tags) as trial:
            with tracker.stage("pretrain", parent=trial, tags=tags) as stage:
                start = time.perf_counter()
                checkpoint = run_pretraining(settings, datasets, stage, scaling)
                stage.log_metrics({"wall_s": time.perf_counter() - start})
                stage.log_image(reconstruction_gallery(settings, checkpoint, datasets["val"]),
                                "reconstruction_gallery.png")
                stage.log_artifact(checkpoint / "checkpoint.pt", "checkpoint")
            for fraction in settings["fractions"]:
                for mode in settings["modes"]:
                    name = f"finetune-{mode}-frac{fraction * 100:g}"
                    with tracker.stage(name, parent=trial,
                                       tags={**tags, "fraction": fraction, "mode": mode}) as st:
                        metrics = run_finetuning(settings, datasets, st, scaling, checkpoint,
                                                 fraction, mode)
                    rows.append({"method": masking["name"], "mode": mode,
                                 "fraction": fraction, **metrics})
        for method, init_weights in baseline_methods(settings.get("baselines", {})):
            method_tags = {**tags, "strategy": method}
            with tracker.trial(run_name(method, seed=seed), parent=study,
                               tags=method_tags) as trial:
                for fraction in settings["fractions"]:
                    with tracker.stage(f"finetune-full-frac{fraction * 100:g}", parent=trial,
                                       tags=method_tags) as st:
                        metrics = run_finetuning(settings, datasets, st, scaling, None,
                                                 fraction, "full", init_weights=init_weights)
                    rows.append({"method": method, "mode": "full", "fraction": fraction,
                                 **metrics})
        table = pd.DataFrame(rows)
        study.log_table(table, "results.csv")
        for row in rows:
            key = f"{row['method']}/{row['mode']}/frac{row['fraction'] * 100:g}"
            study.log_metrics({f"{key}/accuracy": row["accuracy"],
                               f"{key}/auc_mean": row.get("auc_mean", float("nan"))})
    return table

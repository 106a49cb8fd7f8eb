"""The public stages of every study: pretraining (cached) and fine-tuning + test.

The studies (:func:`~medmask.train.run_mim_study`, :func:`~medmask.train.run_ahm_study`) and
the sweeps' trials (:mod:`medmask.tune`) call these functions; they build the loop config, fit
a ``TorchTrainer`` of the one epoch-loop skeleton and log what they did to the stage's run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmask import columns as C
from medmask.data.splits import label_fraction_subsets
from medmask.eval import classification_metrics
from medmask.eval.figures import mask_gallery
from medmask.masking import apply_patch_mask
from medmask.models import create_model, load_local_weights
from medmask.preprocess import CropToLungs, map_stage
from medmask.train._checkpoint import StageCache, code_version, load_checkpoint
from medmask.train._finetune import build_classifier, finetune_loop, predict
from medmask.train._masks import build_mask_strategy, masking_cache_key
from medmask.train._pretrain import pretrain_loop
from medmask.train._settings import (
    CropSettings,
    FinetuneSettings,
    ModelSettings,
    PretrainSettings,
    StageSettings,
    TransferSettings,
)
from medmask.train._trainer import (
    ScalingSettings,
    build_trainer,
    fit_and_load,
    steps_per_epoch,
)

log = logging.getLogger(__name__)

TRAIN_COLUMNS = (C.IMAGE, C.IMAGE_KEY, C.ORGANS, C.LABEL, C.LABELS)


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
    return dataset.filter(lambda row: row[C.ID] in keep).materialize(), sorted(keep)


def train_view(dataset: Any) -> Any:
    """Only the numeric columns the loops need (strings cannot become tensors)."""
    names = set(dataset.schema().names)
    return dataset.select_columns([c for c in TRAIN_COLUMNS if c in names])


def lung_cropped(datasets: dict[str, Any], crop: CropSettings | None, stage: Any,
                 batch_size: int = 32) -> dict[str, Any]:
    """Every split cropped to its lungs (option 4) when ``crop`` is set, else unchanged; the
    fallbacks (whole image kept) are logged per split as ``data/crop_fallbacks_<split>``."""
    if crop is None:
        return datasets
    stage_fn = CropToLungs(crop.padding, crop.min_crop_ratio)
    out = {name: map_stage(ds, stage_fn, batch_size).materialize()
           for name, ds in datasets.items()}
    stage.log_metrics({
        f"data/crop_fallbacks_{name}": float(
            ds.select_columns([C.CROP_FALLBACK]).to_pandas()[C.CROP_FALLBACK].sum())
        for name, ds in out.items()})
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
    datasets = lung_cropped({"train": datasets["train"]}, settings.crop, stage)
    train = train_view(datasets["train"]).materialize()
    loop_config = {
        **stage_loop_config(settings.pretrain, settings.seed, train.count(),
                            scaling.num_workers, stage),
        "method": settings.method,
        "method_params": dict(settings.method_params),
        "crop": dataclasses.asdict(settings.crop) if settings.crop else None,
        "model": dataclasses.asdict(settings.model),
        "masking": dataclasses.asdict(settings.masking),
        "inject_failure": settings.pretrain.inject_failure,
    }
    trainer = build_trainer(
        pretrain_loop, loop_config, {"train": train}, scaling=scaling,
        storage_path=Path(settings.storage_dir), name=f"pretrain-{cache.entry(key).name}",
        callbacks=callbacks,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"pretraining reported no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as directory:
        entry = cache.store(key, directory)
    return entry


def run_finetuning(settings: FinetuneSettings, datasets: dict[str, Any], stage: Any,
                   scaling: ScalingSettings, pretrained: Path | None, fraction: float,
                   mode: str, init_weights: TransferSettings | None = None,
                   callbacks: Sequence[Any] = ()) -> dict[str, float]:
    """Fine-tune on a label fraction, then evaluate on the test split; returns test metrics.

    ``pretrained`` is a pretraining checkpoint folder; ``init_weights`` a local weights file
    for the Transfer baseline (what loaded is logged as ``transfer_weights.json``); neither =
    From Scratch. ``callbacks`` go to the ``TorchTrainer`` (Ray Train ``UserCallback`` s).
    """
    datasets = lung_cropped({k: datasets[k] for k in ("train", "val", "test")}, settings.crop,
                            stage)
    subset, ids = label_fraction_subset(datasets["train"], fraction, settings.seed)
    stage.log_dict({"fraction": fraction, "ids": ids}, "label_fraction_ids.json")
    train = train_view(subset).materialize()
    head = settings.head
    transfer = init_weights if init_weights and init_weights.weights else None
    loop_config = {
        **stage_loop_config(settings.finetune, settings.seed, train.count(),
                            scaling.num_workers, stage),
        "model": dataclasses.asdict(settings.model),
        "pretrained": str(pretrained) if pretrained else None,
        "init_weights": dataclasses.asdict(transfer) if transfer else None,
        "mode": mode,
        "head": dataclasses.asdict(head),
    }
    if transfer is not None:
        report = transfer_report(settings.model, transfer)
        stage.log_dict(dataclasses.asdict(report), "transfer_weights.json")
        stage.set_tags({"transfer_weights": report.summary()})
    val = train_view(datasets["val"]).materialize()
    trainer = build_trainer(
        finetune_loop, loop_config, {"train": train, "val": val}, scaling=scaling,
        storage_path=Path(settings.storage_dir), name=f"finetune-{stage.run_id[:8]}",
        callbacks=callbacks,
    )
    model = fit_and_load(trainer, build_classifier({**loop_config, "pretrained": None,
                                                    "init_weights": None}), "fine-tuning")
    probs, targets = predict(model, train_view(datasets["test"]), 64, head.multilabel)
    metrics = classification_metrics(probs, targets, multilabel=head.multilabel,
                                     class_names=head.class_names)
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number)}
    stage.log_metrics({f"test/{k}": v for k, v in numeric.items()})
    return numeric


def transfer_report(model: ModelSettings, init_weights: TransferSettings) -> Any:
    """What a Transfer weights file loads into the encoder (fails fast, before training)."""
    encoder = create_model(model.name, **model.params)
    return load_local_weights(encoder, str(init_weights.weights), init_weights.prefix)


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

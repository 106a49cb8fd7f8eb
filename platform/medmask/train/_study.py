"""Pretrain -> fine-tune -> evaluate: the masked-image-modeling study behind mae.py/rgmim.py.

One function, :func:`run_mim_study`, orchestrates the public stages from typed
:class:`MimSettings` (the experiments build them from their Hydra config), with the run tree
study -> trial -> stage in MLflow.
Pretraining checkpoints are cached by a hash of everything that determines them, so fine-tuning
at several label fractions, and later sweeps, reuse one pretraining run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pandas as pd

from medmask.methods import create_method
from medmask.preprocess import study_splits
from medmask.tracking import run_name
from medmask.train._loop_utils import quiet_data_progress
from medmask.train._settings import BaselineSettings, MimSettings, TransferSettings
from medmask.train._stages import reconstruction_gallery, run_finetuning, run_pretraining


def baseline_methods(baselines: BaselineSettings) -> list[tuple[str, TransferSettings | None]]:
    """The baselines fine-tuned without masked pretraining: From Scratch (random init, on by
    default) and Transfer (a local weights file, when ``transfer.weights`` is set)."""
    methods: list[tuple[str, TransferSettings | None]] = []
    if baselines.from_scratch:
        methods.append(("scratch", None))
    if baselines.transfer.weights:
        methods.append(("transfer", baselines.transfer))
    return methods


def run_mim_study(settings: MimSettings, tracker: Any) -> pd.DataFrame:
    """Pretrain with ``settings.masking``, fine-tune at each label fraction and compare with
    the baselines (From Scratch, Transfer) trained with the same budget.

    Returns the results table (one row per method x fraction x mode), also logged as CSV.
    """
    quiet_data_progress()  # the stages report per epoch; per-iteration data bars drown them
    seed, masking, scaling = settings.seed, settings.masking, settings.scaling
    masks = create_method(settings.method).uses_masks  # contrastive methods draw no masks
    label = masking.name if masks else settings.method
    pretraining, finetuning = settings.pretraining(), settings.finetuning()
    datasets = {k: v.materialize() for k, v in study_splits(settings.data, seed).items()}
    tags = {"strategy": masking.name, "ratio": masking.ratio, "method": settings.method,
            "dataset": settings.data["name"], "seed": seed, "model": settings.model.name}
    rows = []
    trial_name = (run_name(masking.name, ratio=masking.ratio, seed=seed) if masks
                  else run_name(settings.method, seed=seed))
    with tracker.study(f"{settings.study}-{trial_name}", tags=tags) as study:
        study.log_params(dataclasses.asdict(settings))
        with tracker.trial(trial_name, parent=study, tags=tags) as trial:
            with tracker.stage("pretrain", parent=trial, tags=tags) as stage:
                start = time.perf_counter()
                checkpoint = run_pretraining(pretraining, datasets, stage, scaling)
                stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
                if masks:
                    stage.log_image(reconstruction_gallery(pretraining, checkpoint,
                                                           datasets["val"]),
                                    "reconstruction_gallery.png")
                stage.log_artifact(checkpoint / "checkpoint.pt", "checkpoint")
            for fraction in settings.fractions:
                for mode in settings.modes:
                    name = f"finetune-{mode}-frac{fraction * 100:g}"
                    with tracker.stage(name, parent=trial,
                                       tags={**tags, "fraction": fraction, "mode": mode}) as st:
                        metrics = run_finetuning(finetuning, datasets, st, scaling, checkpoint,
                                                 fraction, mode)
                    rows.append({"method": label, "mode": mode, "fraction": fraction,
                                 **metrics})
        for method, init_weights in baseline_methods(settings.baselines):
            method_tags = {**tags, "strategy": method}
            with tracker.trial(run_name(method, seed=seed), parent=study,
                               tags=method_tags) as trial:
                for fraction in settings.fractions:
                    with tracker.stage(f"finetune-full-frac{fraction * 100:g}", parent=trial,
                                       tags=method_tags) as st:
                        metrics = run_finetuning(finetuning, datasets, st, scaling, None,
                                                 fraction, "full", init_weights=init_weights)
                    rows.append({"method": method, "mode": "full", "fraction": fraction,
                                 **metrics})
        table = pd.DataFrame(rows)
        study.log_table(table, "results.csv")
        for row in rows:
            key = f"{row['method']}/{row['mode']}/frac{row['fraction'] * 100:g}"
            study.log_metrics({f"test/{key}/accuracy": row["accuracy"],
                               f"test/{key}/auc_mean": row.get("auc_mean", float("nan"))})
    return table

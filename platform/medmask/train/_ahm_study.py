"""The AHM pipeline: reconstruction net -> RL masking policy -> AHM pretraining -> segmentation.

Source: "Self-Supervised Medical Image Segmentation Using Deep Reinforced Adaptive Masking"
(AHM, IEEE TMI), sections IV-V. :func:`run_ahm_study` runs the five steps of
``experiments/ahm.py`` from typed :class:`AhmSettings`, each an MLflow stage run under one
study run (the stage functions live in :mod:`medmask.train._stages`):

1. ``reconstruction``: pretrain the U-Net with random masking (Ray Train). This checkpoint is
   both AHM's frozen reward network and the "random masking" pretraining of step 4, so one
   pretraining serves two purposes (the pretraining cache would reuse it anyway).
2. ``policy``: train the masking policy with RLlib APPO (several EnvRunners; the paper's Adam
   schedule), logging reward, losses, entropy and env steps/s per iteration; then the
   diagnostics on the test images (:func:`medmask.rl.policy_diagnostics`: random,
   policy, position prior, position oracle, oracle, value-head and saliency masks, the
   captured share with its bootstrap interval, compactness, Spearman of V vs the oracle).
3. ``pretrain-ahm``: masked image modeling with ``masking=ahm`` and the trained policy.
4. ``segment-*``: end-to-end segmentation fine-tuning at each label fraction from the AHM
   encoder, the random-masking encoder and from scratch (AHM's "Fully Supervised").
5. The results table (printed, logged as CSV) and figures: AHM Fig. 8 (image, predicted loss,
   masking probability, masked image) and the reward curve.

Every stage's result is cached by a hash of what determines it (``cache_dir``, one
:class:`StageCache` per kind), so a re-run skips finished stages: pretraining, the policy
(``policy.pt``, ``history.csv``) and each fine-tuning (``metrics.json``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from medmask.data import phantom
from medmask.preprocess import study_splits
from medmask.tracking import run_name
from medmask.train._loop_utils import quiet_data_progress
from medmask.train._settings import AhmSettings, MaskingSettings
from medmask.train._stages import (
    SEGMENT_RESULTS,
    dataset_images,
    pretrain_settings,
    reconstruction_gallery,
    run_policy_training,
    run_pretraining,
    run_segmentation,
    segmentation_cache_key,
)

log = logging.getLogger(__name__)


def check_phantom_variant(data: Any) -> None:
    """The phantom variant, checked before any compute (``data.variant``).

    ``configs/ahm.yaml`` pins ``classic``, the phantom AHM is tuned on: the policy's hard
    patches are the phantom's, and the benchmark phantom's clutter outside the lungs would
    become AHM's hard patches.
    """
    variant = data.get("variant")
    if data.get("name") == "phantom" and variant is not None and variant not in phantom.VARIANTS:
        raise ValueError(f"data.variant={variant!r}: valid phantom variants are "
                         f"{list(phantom.VARIANTS)}")


def run_ahm_study(settings: AhmSettings, tracker: Any) -> pd.DataFrame:
    """Run the five AHM steps (module docstring); returns the segmentation results table."""

    check_phantom_variant(settings.data)  # methods and target are checked by the settings
    quiet_data_progress()  # the stages report per epoch; per-iteration data bars drown them
    seed, ratio, policy, seg = settings.seed, settings.ratio, settings.policy, \
        settings.segmentation
    scaling = settings.scaling
    datasets = {k: v.materialize() for k, v in study_splits(dict(settings.data), seed).items()}
    tags = {"strategy": "ahm", "ratio": ratio, "dataset": settings.data["name"],
            "seed": seed, "model": settings.model.name,
            "random_share": policy.random_share, "target": seg.target}
    random_settings = settings.pretraining("mae", MaskingSettings("random", ratio))
    rows: list[dict[str, Any]] = []
    study_name = f"{settings.study}-{run_name('ahm', ratio=ratio, seed=seed)}"
    with tracker.study(study_name, tags=tags) as study:
        study.log_params(dataclasses.asdict(settings))
        with tracker.trial("pipeline", parent=study, tags=tags) as trial:
            encoders: dict[str, Path | None] = {"scratch": None}
            with tracker.stage("reconstruction", parent=trial,
                               tags={**tags, "strategy": "random"}) as stage:
                start = time.perf_counter()
                encoders["random"] = run_pretraining(random_settings, datasets, stage, scaling)
                stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
                _log_pretraining(stage, random_settings, encoders["random"], datasets)
            with tracker.stage("policy", parent=trial, tags=tags) as stage:
                start = time.perf_counter()
                folder, check = run_policy_training(
                    policy, ratio, seed, settings.cache_dir, random_settings,
                    encoders["random"],
                    dataset_images(datasets["train"], policy.pool_images, seed),
                    dataset_images(datasets["test"], policy.eval_images, seed), stage)
                stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
            study.log_metrics(check)
            log.debug("policy vs random masks on held-out images: %s", check)
            ahm_settings = settings.pretraining("ahm", MaskingSettings("ahm", ratio, {
                "policy_checkpoint": str(folder / "policy.pt"),
                "random_share": policy.random_share}))
            with tracker.stage("pretrain-ahm", parent=trial, tags=tags) as stage:
                start = time.perf_counter()
                encoders["ahm"] = run_pretraining(ahm_settings, datasets, stage, scaling)
                stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
                _log_pretraining(stage, ahm_settings, encoders["ahm"], datasets)
            keys = {"ahm": pretrain_settings(ahm_settings),
                    "random": pretrain_settings(random_settings), "scratch": None}
            for method in seg.methods:
                for fraction in seg.fractions:
                    key = segmentation_cache_key(seg, keys[method], fraction, settings.model,
                                                 settings.data, seed)
                    with tracker.stage(f"segment-{method}-frac{fraction * 100:g}", parent=trial,
                                       tags={**tags, "strategy": method,
                                             "fraction": fraction}) as stage:
                        metrics = run_segmentation(
                            seg, settings.model, seed, settings.cache_dir,
                            settings.storage_dir, datasets, stage, scaling, encoders[method],
                            float(fraction), key)
                    rows.append({"method": method, "fraction": fraction,
                                 **{k: metrics.get(k, float("nan")) for k in SEGMENT_RESULTS}})
        table = pd.DataFrame(rows)
        study.log_table(table, "results.csv")
        for row in rows:
            key = f"test/{row['method']}/frac{row['fraction'] * 100:g}"
            study.log_metrics({f"{key}/dice": row["dice"], f"{key}/hd95": row["hd95"]})
    table.attrs["policy_check"] = check
    return table


def _log_pretraining(stage: Any, settings: Any, checkpoint: Path,
                     datasets: dict[str, Any]) -> None:
    stage.log_image(reconstruction_gallery(settings, checkpoint, datasets["val"]),
                    "reconstruction_gallery.png")
    stage.log_artifact(checkpoint / "checkpoint.pt", "checkpoint")

"""The AHM pipeline: reconstruction net -> RL masking policy -> AHM pretraining -> segmentation.

Source: "Self-Supervised Medical Image Segmentation Using Deep Reinforced Adaptive Masking"
(AHM, IEEE TMI), sections IV-V. :func:`run_ahm_study` runs the five steps of
``experiments/ahm.py`` from a plain settings dict, each an MLflow stage run under one study run:

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

Every stage's result is cached by a hash of what determines it (``cache_dir``), so a re-run
skips finished stages: pretraining (:class:`StageCache`), the policy (``policy.pt``,
``history.csv``) and each fine-tuning (``metrics.json``).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import envs
from medmask import columns as C
from medmask.data import phantom
from medmask.eval.figures import policy_figure, reward_curve, segmentation_figure
from medmask.models import create_model
from medmask.preprocess import study_splits
from medmask.rl import (
    ALGO_DIR,
    ENV_STEPS,
    REWARD,
    PolicyBudget,
    ahm_appo_config,
    load_policy,
    policy_diagnostics,
    save_policy,
    train_policy,
)
from medmask.tracking import run_name
from medmask.train._checkpoint import config_hash, load_checkpoint
from medmask.train._loop_utils import quiet_data_progress
from medmask.train._segment import (
    build_segmenter,
    check_target,
    predict_segmentation,
    score_segmentation,
)
from medmask.train._segment import segment_loop as loop
from medmask.train._settings import PretrainSettings, settings_from_dict
from medmask.train._stages import (
    label_fraction_subset,
    pretrain_settings,
    reconstruction_gallery,
    run_pretraining,
)
from medmask.train._trainer import (
    ScalingSettings,
    build_trainer,
    fit_and_load,
    steps_per_epoch,
)

log = logging.getLogger(__name__)

METHODS = ("ahm", "random", "scratch")
RESULT_METRICS = ("dice", "iou", "ppv", "sensitivity", "hd95", "boundary_iou", "hd95_nan_count")
SEGMENT_COLUMNS = (C.IMAGE, C.LESION, C.ORGANS)


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


def check_phantom_variant(data: dict[str, Any]) -> None:
    """The phantom variant, checked before any compute (``data.variant``).

    ``configs/ahm.yaml`` pins ``classic``, the phantom AHM is tuned on: the policy's hard
    patches are the phantom's, and the benchmark phantom's clutter outside the lungs would
    become AHM's hard patches.
    """
    variant = data.get("variant")
    if data.get("name") == "phantom" and variant is not None and variant not in phantom.VARIANTS:
        raise ValueError(f"data.variant={variant!r}: valid phantom variants are "
                         f"{list(phantom.VARIANTS)}")


# ------------------------------------------------------------------------------------------
# step 2: the policy


def policy_cache_key(settings: dict[str, Any], reconstruction_key: dict[str, Any]
                     ) -> dict[str, Any]:
    return {"reconstruction": reconstruction_key, "policy": settings["policy"],
            "ratio": settings["masking"]["ratio"], "seed": settings["seed"]}


def run_policy_training(settings: dict[str, Any], reconstruction_settings: PretrainSettings,
                        reconstruction: Path, train_images: np.ndarray,
                        heldout: np.ndarray, stage: Any) -> tuple[Path, dict[str, float]]:
    """Train (or reuse) the masking policy; returns its folder and the held-out check."""

    policy = dict(settings["policy"])
    folder = Path(settings["cache_dir"]) / "policy" / config_hash(
        policy_cache_key(settings, pretrain_settings(reconstruction_settings)))
    cached = (folder / "policy.pt").is_file()
    stage.set_tags({"cache_hit": cached, "cache_key": folder.name})
    budget_settings = dict(policy.pop("budget"))
    if not budget_settings.get("images_per_epoch"):  # an epoch = one pass over the pool
        budget_settings["images_per_epoch"] = len(train_images)
    budget = PolicyBudget(**budget_settings)
    eval_images = int(policy.pop("eval_images", None) or len(heldout))
    policy.pop("pool_images", None)
    transfer = policy.pop("checkpoint", None)
    if transfer and not cached:  # AHM's transfer ablation: reuse a policy trained elsewhere
        stage.set_tags({"policy_source": str(transfer)})
        folder.mkdir(parents=True, exist_ok=True)
        save_policy(load_policy(transfer), folder)
        pd.DataFrame(columns=["iteration", REWARD, ENV_STEPS]).to_csv(folder / "history.csv",
                                                                      index=False)
    elif not cached:
        env_config = {"reconstruction": functools.partial(load_reconstruction, str(reconstruction)),
                      "images": train_images}
        algo_config = ahm_appo_config(
            envs.ENV_ID, env_config, mask_ratio=float(settings["masking"]["ratio"]),
            images_per_epoch=budget.images_per_epoch, max_epochs=budget.max_epochs,
            seed=int(settings["seed"]), **policy)
        folder.mkdir(parents=True, exist_ok=True)  # a short budget may end before a checkpoint
        net, history = train_policy(
            algo_config, budget, checkpoint_dir=folder,
            on_iteration=lambda i, metrics: stage.log_metrics(metrics, step=i))
        history.to_csv(folder / "history.csv", index=False)
        save_policy(net, folder)
        shutil.rmtree(folder / ALGO_DIR, ignore_errors=True)  # only needed to resume training
    history = pd.read_csv(folder / "history.csv")
    net = load_policy(folder)
    check = policy_diagnostics(
        net, load_reconstruction(str(reconstruction)), train_images, heldout[:eval_images],
        ratio=float(settings["masking"]["ratio"]), random_share=float(policy["random_share"]),
        seed=int(settings["seed"]))
    stage.log_metrics(check)
    stage.log_artifact(folder / "policy.pt", "policy")
    stage.log_table(history, "reward_history.csv")
    stage.log_figure(reward_curve(history, x=ENV_STEPS, y=REWARD), "reward_curve.png")
    stage.log_image(policy_figure(net, heldout[:4], float(settings["masking"]["ratio"]),
                                  float(policy["random_share"])), "ahm_fig8.png")
    return folder, check


# ------------------------------------------------------------------------------------------
# step 4: segmentation


def segment_view(dataset: Any) -> Any:
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


def run_segmentation(settings: dict[str, Any], datasets: dict[str, Any], stage: Any,
                     scaling: ScalingSettings, pretrained: Path | None, fraction: float,
                     cache_key: dict[str, Any]) -> dict[str, float]:
    """Fine-tune a U-Net segmenter on a label fraction (cached) and score it on the test split."""

    seg = settings["segmentation"]
    folder = Path(settings["cache_dir"]) / "segment" / config_hash(cache_key)
    stage.set_tags({"cache_hit": (folder / "metrics.json").is_file(), "cache_key": folder.name})
    if (folder / "metrics.json").is_file():
        metrics = json.loads((folder / "metrics.json").read_text())
        stage.log_metrics({f"test/{k}": v for k, v in metrics.items()})
        return metrics
    subset, ids = label_fraction_subset(datasets["train"], fraction, int(settings["seed"]))
    stage.log_dict({"fraction": fraction, "ids": ids}, "label_fraction_ids.json")
    train = segment_view(subset).materialize()
    epochs = int(seg["epochs"])
    steps = steps_per_epoch(train.count(), int(seg["batch_size"]), scaling.num_workers)
    repeats = segmentation_repeats(epochs, int(seg.get("min_steps", 0)), steps)
    if repeats > 1:
        train = train.union(*[train] * (repeats - 1)).materialize()
        steps = steps_per_epoch(train.count(), int(seg["batch_size"]), scaling.num_workers)
    stage.log_metrics({"train_images": len(ids), "subset_repeats": repeats,
                       "steps_per_epoch": steps})
    loop_config = {
        "model": settings["model"], "pretrained": str(pretrained) if pretrained else None,
        "target": seg["target"], "optim": seg["optim"], "batch_size": int(seg["batch_size"]),
        "epochs": epochs, "steps_per_epoch": steps,
        "seed": int(settings["seed"]), "mixed_precision": bool(seg.get("mixed_precision", True)),
        "tracking": {"uri": stage.uri, "run_id": stage.run_id},
    }
    trainer = build_trainer(loop, loop_config,
                            {"train": train, "val": segment_view(datasets["val"])},
                            scaling=scaling, storage_path=Path(settings["storage_dir"]),
                            name=f"segment-{folder.name}")
    model = fit_and_load(trainer, build_segmenter({**loop_config, "pretrained": None}),
                         "segmentation fine-tuning")
    images, preds, targets = predict_segmentation(model, segment_view(datasets["test"]),
                                                  seg["target"], 64)
    metrics = score_segmentation(preds, targets, model.num_classes)
    stage.log_metrics({f"test/{k}": v for k, v in metrics.items()})
    stage.log_image(segmentation_figure(images[:4], targets[:4], preds[:4]),
                    "segmentation_gallery.png")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


# ------------------------------------------------------------------------------------------
# the study


def run_ahm_study(settings: dict[str, Any], tracker: Any) -> pd.DataFrame:
    """Run the five AHM steps (module docstring); returns the segmentation results table."""

    unknown = [m for m in settings["segmentation"]["methods"] if m not in METHODS]
    if unknown:  # before any compute
        raise ValueError(f"segmentation methods must be among {METHODS}, got {unknown}")
    check_target(settings["segmentation"]["target"])
    check_phantom_variant(settings["data"])
    quiet_data_progress()  # the stages report per epoch; per-iteration data bars drown them
    seed = int(settings["seed"])
    scaling = ScalingSettings(**settings["scaling"])
    datasets = {k: v.materialize() for k, v in study_splits(settings["data"], seed).items()}
    ratio = float(settings["masking"]["ratio"])
    policy = settings["policy"]
    tags = {"strategy": "ahm", "ratio": ratio, "dataset": settings["data"]["name"],
            "seed": seed, "model": settings["model"]["name"],
            "random_share": policy["random_share"], "target": settings["segmentation"]["target"]}
    random_settings = _pretraining(settings, "mae", {"name": "random", "ratio": ratio,
                                                     "params": {}})
    rows: list[dict[str, Any]] = []
    study_name = f"{settings['study']}-{run_name('ahm', ratio=ratio, seed=seed)}"
    with tracker.study(study_name, tags=tags) as study:
        study.log_params(settings)
        with tracker.trial("pipeline", parent=study, tags=tags) as trial:
            encoders: dict[str, Path | None] = {"scratch": None}
            with tracker.stage("reconstruction", parent=trial,
                               tags={**tags, "strategy": "random"}) as stage:
                start = time.perf_counter()
                encoders["random"] = run_pretraining(random_settings, datasets, stage, scaling)
                stage.log_metrics({"wall_s": time.perf_counter() - start})
                _log_pretraining(stage, random_settings, encoders["random"], datasets)
            with tracker.stage("policy", parent=trial, tags=tags) as stage:
                start = time.perf_counter()
                folder, check = run_policy_training(
                    settings, random_settings, encoders["random"],
                    dataset_images(datasets["train"], policy.get("pool_images"), seed),
                    dataset_images(datasets["test"], policy.get("eval_images"), seed), stage)
                stage.log_metrics({"wall_s": time.perf_counter() - start})
            study.log_metrics(check)
            log.info("policy vs random masks on held-out images: %s", check)
            ahm_settings = _pretraining(settings, "ahm", {
                "name": "ahm", "ratio": ratio,
                "params": {"policy_checkpoint": str(folder / "policy.pt"),
                           "random_share": float(policy["random_share"])}})
            with tracker.stage("pretrain-ahm", parent=trial, tags=tags) as stage:
                start = time.perf_counter()
                encoders["ahm"] = run_pretraining(ahm_settings, datasets, stage, scaling)
                stage.log_metrics({"wall_s": time.perf_counter() - start})
                _log_pretraining(stage, ahm_settings, encoders["ahm"], datasets)
            keys = {"ahm": pretrain_settings(ahm_settings),
                    "random": pretrain_settings(random_settings), "scratch": None}
            for method in settings["segmentation"]["methods"]:
                for fraction in settings["segmentation"]["fractions"]:
                    name = f"segment-{method}-frac{fraction * 100:g}"
                    key = {"encoder": keys[method], "segmentation": settings["segmentation"],
                           "fraction": fraction, "model": settings["model"],
                           "data": settings["data"], "seed": seed}
                    with tracker.stage(name, parent=trial, tags={
                            **tags, "strategy": method, "fraction": fraction}) as stage:
                        metrics = run_segmentation(settings, datasets, stage, scaling,
                                                   encoders[method], float(fraction), key)
                    rows.append({"method": method, "fraction": fraction,
                                 **{k: metrics.get(k, float("nan")) for k in RESULT_METRICS}})
        table = pd.DataFrame(rows)
        study.log_table(table, "results.csv")
        for row in rows:
            key = f"{row['method']}/frac{row['fraction'] * 100:g}"
            study.log_metrics({f"{key}/dice": row["dice"], f"{key}/hd95": row["hd95"]})
    table.attrs["policy_check"] = check
    return table


def _pretraining(settings: dict[str, Any], method: str, masking: dict[str, Any]
                 ) -> PretrainSettings:
    """The typed settings of one of the study's pretraining stages."""
    return settings_from_dict(PretrainSettings, {
        "seed": settings["seed"], "data": settings["data"], "model": settings["model"],
        "masking": masking, "pretrain": settings["pretrain"], "method": method,
        "cache_dir": settings["cache_dir"], "storage_dir": settings["storage_dir"]})


def _log_pretraining(stage: Any, settings: PretrainSettings, checkpoint: Path,
                     datasets: dict[str, Any]) -> None:
    stage.log_image(reconstruction_gallery(settings, checkpoint, datasets["val"]),
                    "reconstruction_gallery.png")
    stage.log_artifact(checkpoint / "checkpoint.pt", "checkpoint")


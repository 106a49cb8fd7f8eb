"""The function trainable of a sweep: one Tune trial = pretrain + fine-tune ``TorchTrainer`` s.

Ray 2.60's way of joining Tune and Train (V2): the trial function builds and fits the
``TorchTrainer`` itself, with Ray's :class:`~ray.tune.integration.ray_train.TuneReportCallback`
forwarding every epoch report of the Train workers to Tune (so ASHA sees them), and reports the
trial's test metrics at the end. The stages reuse the MIM study's own functions
(:func:`run_pretraining` with its config-hash cache, :func:`run_finetuning`); nothing of the
training loops is duplicated here.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from medmask.eval import GroundingSettings, evaluate_grounding, image_differences
from medmask.preprocess import study_splits
from medmask.tracking import Tracker, tune_trial_run
from medmask.train import (
    FinetuneCell,
    FitSettings,
    MimSettings,
    PhantomData,
    config_hash,
    finetune_cells,
    fitted_classifier,
    masks_patches,
    pretrain_settings,
    pretraining_summary,
    quiet_data_progress,
    reconstruction_gallery,
    run_pretraining,
    torch_threads,
)
from medmask.tune._space import trial_name, trial_settings, trial_values

log = logging.getLogger(__name__)

DIFFERENCES = "grounding_image_differences"  # a grounding trial's per-image units (a list)
TRIAL_ID_TAG = "ray_trial_id"  # Ray's trial id, a tag only: the run name says what it is
PRETRAIN_SUMMARY_PREFIX = "pretrain_summary/"  # step time, peak memory, probe convergence


class StageReportCallback(TuneReportCallback):
    """Tune's report callback with the stage as a metric prefix (``pretrain/train/loss``).

    Pretraining and fine-tuning both report ``train/loss``; the prefix keeps their curves
    apart in Tune's results and for a scheduler's metric.
    """

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        prefixed = [{f"{self.stage}/{k}": v for k, v in m.items()} for m in metrics]
        super().after_report(run_context, prefixed, checkpoint)


@contextmanager
def pretrain_lock(settings: MimSettings) -> Iterator[None]:
    """Serialize pretraining per cache key: concurrent trials that differ only in fine-tuning
    wait for the first one's checkpoint instead of pretraining the same encoder twice.

    A file lock beside the cache (on a cluster, ``cache_dir`` must be shared storage).
    """

    root = Path(settings.cache_dir) / "pretrain"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{config_hash(pretrain_settings(settings.pretraining()))}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep_trial(config: dict[str, Any], base: MimSettings, context: dict[str, Any]) -> None:
    """The Tune trial function: ``config`` holds this trial's sweep parameters.

    Args:
        config: the sampled sweep parameters (``strategy``, ``ratio``, ``seed``, ...).
        base: the MIM settings every trial starts from.
        context: ``uri``, ``experiment``, ``study_run_id``, ``strategies``, ``swept`` and
            ``log_checkpoints``, ``trial`` / ``grounding`` (the trial kind and, for
            ``grounding``, its recipe) and ``policies`` (the AHM policies the sweep trained,
            :func:`~medmask.tune.prepare_policies`) (bound with ``tune.with_parameters``).
    """
    from ray import tune

    quiet_data_progress()
    settings = trial_settings(base, config, context["strategies"], context.get("methods"),
                              policies=context.get("policies"))
    arm = str(config["method"]) if "method" in config else None
    name = trial_name(settings, context["swept"], arm)
    values = trial_values(settings, arm)
    tracker = Tracker(context["uri"], context["experiment"])
    study = tracker.get(context["study_run_id"])
    trial_id = tune.get_context().get_trial_id()
    # the runs of an earlier attempt: left open by an interruption, or finished just as the
    # sweep was interrupted (before Tune recorded it, so Tuner.restore runs the trial again)
    closed = tracker.close_stale(TRIAL_ID_TAG, trial_id, superseded=True)
    if closed:
        log.info("trial %s resumed: closed %d stale run(s) of its first attempt", name,
                 len(closed))
    tags = {**{k: v for k, v in values.items() if v is not None},
            "dataset": settings.data["name"], "sweep": context["sweep"],
            TRIAL_ID_TAG: trial_id}
    # a method arm's name is not always its registered method (scratch: simclr untrained,
    # mae_scratch: mae untrained): logged as method_arm beside the settings' own method
    params = {("method_arm" if k == "method" else k): v for k, v in config.items()}
    with tune_trial_run(tracker, name, study, params=params, tags=tags) as trial:
        trial.log_params(dataclasses.asdict(settings))
        extra: dict[str, Any] = {}
        start = time.perf_counter()
        if context.get("trial", "mim") == "grounding":
            metrics, differences = run_grounding_stages(settings, tracker, trial, tags,
                                                        context["grounding"])
            extra[DIFFERENCES] = differences.tolist()
        else:
            by_mode, summary, finetune_s = run_trial_stages(
                settings, tracker, trial, tags,
                log_checkpoints=bool(context.get("log_checkpoints")))
            metrics = mode_metrics(by_mode)
            extra |= {f"{PRETRAIN_SUMMARY_PREFIX}{k}": v for k, v in summary.items()}
            extra[f"{PRETRAIN_SUMMARY_PREFIX}finetune_wall_s"] = finetune_s
        extra[f"{PRETRAIN_SUMMARY_PREFIX}trial_wall_s"] = time.perf_counter() - start
        trial.log_metrics({f"test/{k}": v for k, v in metrics.items()})
        trial.log_metrics({"perf/trial_wall_s": extra[f"{PRETRAIN_SUMMARY_PREFIX}trial_wall_s"]})
    tune.report({f"test/{k}": v for k, v in metrics.items()} | {"trial_name": name} | extra)


def mode_metrics(by_mode: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """A trial's test metrics: as they are for one mode, ``<mode>/<metric>`` for several
    (:attr:`~medmask.tune.SweepSpec.modes`; :func:`split_modes` undoes it)."""
    if len(by_mode) == 1:
        return dict(next(iter(by_mode.values())))
    return {f"{mode}/{k}": v for mode, metrics in by_mode.items() for k, v in metrics.items()}


def split_modes(tests: Mapping[str, Any], modes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``{mode: test metrics}`` of a trial's reported test metrics (:func:`mode_metrics`)."""
    if len(modes) == 1:
        return {modes[0]: dict(tests)}
    return {mode: {k[len(mode) + 1:]: v for k, v in tests.items() if k.startswith(f"{mode}/")}
            for mode in modes}


def run_trial_stages(settings: MimSettings, tracker: Any, trial: Any,
                     tags: Mapping[str, Any], *, log_checkpoints: bool
                     ) -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
    """Pretrain (cached by config hash) and fine-tune + test in each of the trial's modes (one
    Ray Train run, :func:`finetune_cells`), as stage runs of ``trial``; returns ``{mode: test
    metrics}``, the pretraining's summary (:func:`pretraining_summary`) and the fine-tuning's
    wall seconds (every mode)."""

    scaling, pretraining = settings.scaling, settings.pretraining()
    datasets = {k: v.materialize() for k, v in study_splits(settings.data, settings.seed).items()}
    with tracker.stage("pretrain", parent=trial, tags=tags) as stage:
        start = time.perf_counter()
        with pretrain_lock(settings):
            checkpoint = run_pretraining(pretraining, datasets, stage, scaling,
                                         callbacks=[StageReportCallback("pretrain")])
        stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
        if masks_patches(settings.method) and settings.pretrain.epochs > 0:
            stage.log_image(reconstruction_gallery(pretraining, checkpoint, datasets["val"]),
                            "reconstruction_gallery.png")
        if log_checkpoints:
            stage.log_artifact(checkpoint / "checkpoint.pt", "checkpoint")
    fraction = float(settings.fractions[0])
    start = time.perf_counter()
    with ExitStack() as runs:
        several = len(settings.modes) > 1
        cells = [FinetuneCell(fraction, str(mode), runs.enter_context(tracker.stage(
            f"finetune-{mode}" if several else "finetune", parent=trial,
            tags={**tags, "fraction": fraction, "mode": str(mode)})))
            for mode in settings.modes]
        outcomes = finetune_cells(settings.finetuning(), datasets, cells, scaling, checkpoint,
                                  callbacks=[StageReportCallback("finetune")],
                                  desc=f"finetune {'+'.join(settings.modes)}")
        wall = time.perf_counter() - start
        for cell in cells:
            cell.stage.log_metrics({"perf/wall_s": wall})
    by_mode = {cell.mode: outcome.metrics for cell, outcome in zip(cells, outcomes, strict=True)}
    return by_mode, pretraining_summary(checkpoint), wall


def run_grounding_stages(settings: MimSettings, tracker: Any, trial: Any,
                         tags: Mapping[str, Any], grounding: Mapping[str, Any]
                         ) -> tuple[dict[str, float], Any]:
    """Pretrain (cached, as the MIM trials do), fine-tune a classifier from the encoder
    in-process on the phantom classes (cached) and score its grounding (Mask Creation
    Methodology, inference; :mod:`medmask.eval._grounding`) on the test split. Returns the
    score, its interval and the classifier's accuracy, and the per-image differences (what a
    strategy's interval over seeds resamples)."""
    data = settings.data
    if data.get("name") != "phantom":
        raise ValueError(f"a grounding trial scores phantoms (data=phantom), got "
                         f"data={data.get('name')!r}")
    phantoms = PhantomData(variant=str(data["variant"]), size=int(data["size"]),
                           n_train=int(data["n_train"]), n_test=int(data["n_test"]),
                           seed=settings.seed)
    evaluation = GroundingSettings.from_params(**dict(grounding.get("eval", {})))
    fit = FitSettings(**dict(grounding.get("finetune", {})), seed=settings.seed)
    with tracker.stage("pretrain", parent=trial, tags=tags) as stage:
        start = time.perf_counter()
        datasets = {"train": study_splits(data, settings.seed)["train"]}
        with pretrain_lock(settings):
            checkpoint = run_pretraining(settings.pretraining(), datasets, stage,
                                         settings.scaling,
                                         callbacks=[StageReportCallback("pretrain")])
        stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
    with tracker.stage("grounding", parent=trial, tags=tags) as stage:
        start = time.perf_counter()
        fitted = fitted_classifier(phantoms, fit, settings.cache_dir,
                                   dataclasses.asdict(settings.model), pretrained=checkpoint)
        with torch_threads(1):
            result = evaluate_grounding(fitted.model, phantoms.batches("test"), evaluation)
        stage.log_table(result.table, "drops.csv")
        stage.log_table(result.per_image, "per_image.csv")
        stage.log_dict(result.summary(), "summary.json")
        metrics = {"grounding_score": result.score, "grounding_ci_low": result.ci_low,
                   "grounding_ci_high": result.ci_high,
                   "classifier_accuracy": fitted.test_accuracy,
                   "qualifying_count": float(len(result.qualifying))}
        stage.log_metrics({**{f"test/{k}": v for k, v in metrics.items()},
                           "perf/wall_s": time.perf_counter() - start})
    return metrics, image_differences(result.per_image, result.qualifying)

"""Build, run (or resume) and summarize a sweep: a ``Tuner`` over :func:`sweep_trial`.

The study run (MLflow parent) is created before any compute; each trial makes its own child
run (Ray's ``setup_mlflow``, nested) with stage grandchildren. An interrupted sweep continues
with ``Tuner.restore`` (finished trials are not run again) under the same study run, whose id
is kept beside the Tune experiment. At the end the trial table, the summary (mean and spread
over seeds) and the metric-vs-x plot are written next to the experiment first (a finished
trial's results are never lost to a tracking hiccup) and then logged on the study run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from medmask.tracking import Tracker
from medmask.train import MimSettings, PolicySettings, ScalingSettings
from medmask.tune._policies import prepare_policies
from medmask.tune._space import SweepSpec, param_space, trial_settings, trial_values, validate_sweep
from medmask.tune._summary import (
    comparison_bars,
    comparison_table,
    comparison_text,
    grounding_by_strategy,
    grounding_plot,
    metric_plot,
    pivot_text,
    summary_table,
)
from medmask.tune._trainable import (
    DIFFERENCES,
    PRETRAIN_SUMMARY_PREFIX,
    TRIAL_ID_TAG,
    split_modes,
    sweep_trial,
)

log = logging.getLogger(__name__)

STUDY_FILE = "medmask_study.json"
RESUME_CHOICES = ("auto", "true", "false")
TRIALS_CSV, SUMMARY_CSV, COMPARISON_CSV = "trials.csv", "summary.csv", "comparison.csv"
GROUNDING_CSV = "grounding_by_strategy.csv"
DEFAULT_TRIAL_RESOURCES = {"CPU": 0, "memory": 256 * 1024**2}  # the trial driver's share


@dataclass(frozen=True)
class Concurrency:
    """How many trials run at once and what each trial's driver holds (the cluster group).

    The ``TorchTrainer`` workers of a trial reserve their own resources (Train V2 schedules
    them outside the trial), so the trial function itself reserves no CPU by default (only
    :data:`DEFAULT_TRIAL_RESOURCES`: Tune needs a non-empty bundle), and
    ``max_concurrent_trials`` caps the concurrent trainers. Reserving a CPU per trial would
    leave a 2-CPU machine one trial at a time.
    """

    max_concurrent_trials: int = 1
    trial_resources: Mapping[str, float] | None = None


@dataclass(frozen=True)
class SweepResult:
    """What a sweep leaves: the trial table, the summary, where they are, the study run."""

    trials: pd.DataFrame
    summary: pd.DataFrame
    path: Path
    study_run_id: str
    restored: bool


def auto_max_concurrent_trials(cluster_cpus: float, scaling: ScalingSettings) -> int:
    """As many trials as the cluster has CPUs for their Train workers (at least 1)."""
    per_worker = float(dict(scaling.resources_per_worker or {}).get("CPU", 1) or 1)
    per_trial = max(per_worker * int(scaling.num_workers), 1e-9)
    return max(1, int(cluster_cpus // per_trial))


def run_sweep(
    settings: MimSettings,
    spec: SweepSpec,
    tracker: Any,
    *,
    storage_dir: str | Path,
    concurrency: Concurrency,
    resume: str = "auto",
    stopper: Any = None,
    callbacks: Sequence[Any] = (),
    log_checkpoints: bool = True,
    policy: PolicySettings | None = None,
) -> SweepResult:
    """Run the sweep ``spec`` over the MIM ``settings`` and summarize it.

    Args:
        settings: the base MIM study settings (:class:`medmask.train.MimSettings`).
        spec: what the sweep varies and how it is summarized.
        tracker: the :class:`medmask.tracking.Tracker` (its experiment is the study's).
        storage_dir: Tune's storage root; the experiment lives in ``storage_dir/spec.name``.
        concurrency: trials at once and each trial's resources.
        resume: ``auto`` (restore an interrupted sweep of the same name if there is one),
            ``true`` (must restore) or ``false`` (must start fresh).
        stopper: an optional Tune ``Stopper`` (e.g. a time budget; the sweep is resumable).
        callbacks: extra Tune callbacks (driver side); saved with the experiment.
        log_checkpoints: log each trial's pretrained checkpoint as an artifact.
        policy: how the AHM trials without ``policy_checkpoint`` get their policy: trained
            (or reused from the stage cache) in the driver before the trials, one per seed's
            random-mask reconstruction network (:func:`prepare_policies`); None: such trials
            are a ValueError.
    """
    from ray import tune

    if spec.probe_every is not None:
        settings = replace(settings, probe=replace(settings.probe, every=spec.probe_every))
    if spec.modes:  # every trial fine-tunes in each mode (one Ray Train run)
        settings = replace(settings, modes=tuple(spec.modes))
    resume = check_resume(resume)
    n_points = validate_sweep(settings, spec, train_policies=policy is not None)
    path, restored = sweep_folder(storage_dir, spec.name, resume)
    study_ctx = (tracker.reopen(_read_study_id(path)) if restored
                 else tracker.study(spec.name, tags={"sweep": spec.name}))
    with study_ctx as study:
        if not restored:
            _write_study_id(path, study.run_id)
            study.log_params({"base": asdict(settings), "sweep": _spec_params(spec),
                              **({"ahm_policy": asdict(policy)} if policy else {})})
        policies = prepare_policies(settings, spec, policy, tracker, study)
        log.info("sweep %s: %d grid point(s) x %d sample(s), %s; experiment %s",
                 spec.name, n_points, spec.num_samples,
                 "restored" if restored else "new", path)
        context = {"uri": tracker.uri, "experiment": tracker.experiment,
                   "study_run_id": study.run_id, "strategies": dict(spec.strategies),
                   "swept": sorted(spec.space), "sweep": spec.name,
                   "log_checkpoints": log_checkpoints, "methods": dict(spec.methods),
                   "trial": spec.trial, "grounding": dict(spec.grounding),
                   "policies": policies}
        trainable = tune.with_resources(
            tune.with_parameters(sweep_trial, base=settings, context=context),
            dict(concurrency.trial_resources or DEFAULT_TRIAL_RESOURCES),
        )
        tuner = _tuner(trainable, spec, path, concurrency, stopper, callbacks, restored,
                       (tracker.uri, tracker.experiment))
        # Tune's TensorBoard logger renames every metric with a space ("auc/Pleural
        # Effusion") at INFO, once per report: chatter, not results
        logging.getLogger("tensorboardX").setLevel(logging.WARNING)
        grid = tuner.fit()
        trials = trial_table(grid, settings, spec, policies)
        if len(trials) < len(grid):
            log.warning("%d of %d trial(s) have no test metrics (interrupted, stopped early or "
                        "failed); run the same command again to resume the sweep from %s",
                        len(grid) - len(trials), len(grid), path)
        summary = _summarize(trials, spec, path, study)
    return SweepResult(trials, summary, path, study.run_id, restored)


class CloseStaleRuns(Callback):
    """Ends the MLflow runs of trials stopped early (e.g. by ASHA) as ``KILLED``.

    A stopped trial's actor is killed mid-stage, so its trial and stage runs would stay
    RUNNING; they are closed when Tune completes the trial (finished runs are left alone).
    """

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri, self.experiment = uri, experiment

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:

        closed = Tracker(self.uri, self.experiment).close_stale(TRIAL_ID_TAG, trial.trial_id)
        if closed:
            log.info("trial %s stopped early: %d run(s) ended KILLED", trial, len(closed))


def _tuner(trainable: Any, spec: SweepSpec, path: Path, concurrency: Concurrency,
           stopper: Any, callbacks: Sequence[Any], restored: bool,
           tracking: tuple[str, str]) -> Any:
    from ray import tune

    if restored:
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            num_samples=spec.num_samples,
            max_concurrent_trials=concurrency.max_concurrent_trials,
            scheduler=build_scheduler(spec),
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=path.name,
            storage_path=str(path.parent),
            stop=stopper,
            callbacks=[*callbacks, CloseStaleRuns(*tracking)],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def build_scheduler(spec: SweepSpec) -> Any:
    """FIFO (every trial runs to the end) or ASHA on a per-epoch metric.

    ASHA's metric is reported by one stage only (``finetune/...`` or ``pretrain/...``): Tune's
    strict check that every result holds it is turned off, ASHA itself skips results without
    it.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    scheduler = spec.scheduler
    if scheduler.name == "fifo":
        return FIFOScheduler()
    if scheduler.name == "asha":
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        return ASHAScheduler(
            time_attr=scheduler.time_attr, metric=scheduler.metric, mode=scheduler.mode,
            grace_period=scheduler.grace_period, max_t=scheduler.max_t,
            reduction_factor=scheduler.reduction_factor,
        )
    raise ValueError(f"sweep.scheduler.name must be one of ('fifo', 'asha'), "
                     f"got {scheduler.name!r}")


def trial_table(grid: Any, settings: MimSettings, spec: SweepSpec,
                policies: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per finished trial and fine-tuning mode: its name, compared values and test
    metrics (``policies``: those the sweep trained, :func:`prepare_policies`); a trial that
    fine-tuned in several modes (:attr:`SweepSpec.modes`) gives one row per mode, each with
    the trial's costs."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        if result.error is not None or not any(k.startswith("test/") for k in metrics):
            log.warning("trial %s has no test metrics (error: %s)", result.path, result.error)
            continue
        trial = trial_settings(settings, result.config, spec.strategies, spec.methods,
                               policies=policies)
        arm = str(result.config["method"]) if "method" in result.config else None
        values = trial_values(trial, arm)
        tests = {k[len("test/"):]: v for k, v in metrics.items() if k.startswith("test/")}
        costs = {k[len(PRETRAIN_SUMMARY_PREFIX):]: v for k, v in metrics.items()
                 if k.startswith(PRETRAIN_SUMMARY_PREFIX)}
        units = {DIFFERENCES: metrics[DIFFERENCES]} if DIFFERENCES in metrics else {}
        for mode, mode_tests in split_modes(tests, tuple(trial.modes)).items():
            rows.append({"trial": metrics.get("trial_name"), **values, "mode": mode, **costs,
                         **mode_tests, **units})
    return pd.DataFrame(rows)


def _summarize(trials: pd.DataFrame, spec: SweepSpec, path: Path, study: Any) -> pd.DataFrame:
    if trials.empty:
        log.warning("sweep %s finished no trial: nothing to summarize", spec.name)
        return pd.DataFrame()
    if DIFFERENCES in trials.columns:  # a grounding sweep: intervals over images and seeds
        _summarize_grounding(trials, spec, path, study)
        trials = trials.drop(columns=[DIFFERENCES])
    metrics = [m for m in dict.fromkeys((spec.metric, "accuracy", "auc_mean", "macro_f1"))
               if m in trials.columns]
    summary = summary_table(trials, spec.group, spec.x, metrics)
    text = pivot_text(summary, spec.group, spec.x, spec.metric)
    print(f"\nsweep {spec.name}: {len(trials)} trial(s)\n{text}\n", flush=True)
    log.info("sweep %s summary:\n%s", spec.name, text)
    trials.to_csv(path / TRIALS_CSV, index=False)
    summary.to_csv(path / SUMMARY_CSV, index=False)
    title = f"{spec.name} (smoke run: tiny models)" if spec.smoke else spec.name
    if spec.plot == "bars":
        figure = comparison_bars(summary, spec.group, spec.x, spec.metric, title=title)
        plot_file = f"{spec.metric}_by_{spec.group}.png"
        _log_comparison(trials, spec, path, study)
    else:
        figure = metric_plot(summary, spec.group, spec.x, spec.metric, title=title)
        plot_file = f"{spec.metric}_vs_{spec.x}.png"
    figure.savefig(path / plot_file)
    study.log_table(trials, TRIALS_CSV)
    study.log_table(summary, SUMMARY_CSV)
    study.log_figure(figure, plot_file)
    # No per-cell metric names on the study run (each would be a one-bar chart in the UI):
    # every trial run carries the same ``test/<metric>`` with its swept values as params
    # (``strategy``, ``ratio``, ...), which the UI's own charts compare across trials.
    import matplotlib.pyplot as plt

    plt.close(figure)
    return summary


def _log_comparison(trials: pd.DataFrame, spec: SweepSpec, path: Path, study: Any) -> None:
    """The guide-layout comparison (:func:`comparison_table`) against the ``spec.baseline``
    arm, when the sweep has one: printed, written beside the experiment and logged on the
    study run."""
    if spec.baseline not in set(trials[spec.group]):
        log.warning("sweep %s has no %s arm: no comparison table", spec.name, spec.baseline)
        return
    table = comparison_table(trials, spec.group, spec.x, spec.metric, spec.baseline)
    text = comparison_text(table, spec.group, spec.smoke)
    print(f"\n{text}\n", flush=True)
    table.to_csv(path / COMPARISON_CSV, index=False)
    (path / "comparison.txt").write_text(text + "\n")
    study.log_table(table, COMPARISON_CSV)
    study.log_artifact(path / "comparison.txt")
    study.set_tags({"smoke_run": spec.smoke})


def _summarize_grounding(trials: pd.DataFrame, spec: SweepSpec, path: Path, study: Any) -> None:
    """The grounding score per strategy over its seeds, with a bootstrap interval over the
    images of every seed (:func:`grounding_by_strategy`), as a table and a plot."""
    table = grounding_by_strategy(trials, spec.group, DIFFERENCES, baseline=spec.baseline)
    print(f"\ngrounding score per {spec.group} (mean over seeds, 95% bootstrap interval over "
          f"images within each seed; diff_vs_{spec.baseline}: paired over the same seeds and "
          f"test images):\n{table.to_string(index=False)}\n", flush=True)
    table.to_csv(path / GROUNDING_CSV, index=False)
    study.log_table(table, GROUNDING_CSV)
    figure = grounding_plot(table, spec.group, title=spec.name)
    study.log_figure(figure, "grounding_by_strategy.png")
    import matplotlib.pyplot as plt

    plt.close(figure)


def _spec_params(spec: SweepSpec) -> dict[str, Any]:
    params = asdict(spec)
    params["space"] = {k: list(v) if not isinstance(v, Mapping) else dict(v)
                       for k, v in spec.space.items()}
    return params


def _write_study_id(path: Path, run_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / f"{path.name}.{STUDY_FILE}").write_text(json.dumps({"study_run_id": run_id}))


def check_resume(resume: Any) -> str:
    """``resume`` as one of :data:`RESUME_CHOICES` (a ValueError names a bad value)."""
    resume = str(resume).lower()
    if resume not in RESUME_CHOICES:
        raise ValueError(f"resume must be one of {RESUME_CHOICES}, got {resume!r}")
    return resume


def sweep_folder(storage_dir: str | Path, name: str, resume: str) -> tuple[Path, bool]:
    """The sweep's Tune folder and whether it is restored (``resume``: auto | true | false);
    ValueErrors for ``true`` without a sweep and ``false`` over an existing one."""
    from ray import tune

    path = Path(storage_dir).resolve() / name
    restored = resume != "false" and tune.Tuner.can_restore(str(path))
    if resume == "true" and not restored:
        raise ValueError(f"sweep.resume=true but there is no sweep to restore at {path}")
    if resume == "false" and path.exists():
        raise ValueError(f"a sweep already exists at {path}: resume it (sweep.resume=auto) or "
                         "give this one another sweep.name")
    return path, restored


def _read_study_id(path: Path) -> str:
    return json.loads((path.parent / f"{path.name}.{STUDY_FILE}").read_text())["study_run_id"]

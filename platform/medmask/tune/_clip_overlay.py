"""``sweep=clip_overlay``: Table 2 of the contour-overlay protocol as one Tune study through
the run tree (study -> trial runs), in-process trials (no Ray Train: the heads are small).

Driver side, before the trials: the study run; the CLIP (a local folder, or the phantom CLIP
trained or reused through the stage cache, a stage run under the study); the data splits
(:func:`medmask.preprocess.findings_splits`, handed to every trial through the object
store with ``tune.with_parameters``). The trials are the grid's cells (:func:`cell_points`):
one zero-shot trial, and LP / JFT x trained on original / overlay x each seed, each fitted
with its epoch (and lr) selected on the validation split (:func:`medmask.train.fit_cell`) and
tested on the original and the overlay test images. Each trial logs its readings on its own
run and reports its per-image test probabilities; the driver then scores the grid from them
(:func:`medmask.eval.summarize_clip_overlay`: intervals over test images within every seed)
and logs Table 2's layout, the grid heatmap, the cells, gains, baselines, the validation
selections and the trial table on the study run. An interrupted sweep resumes with
``Tuner.restore`` under the same study run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medmask.eval import (
    INPUTS,
    JOINT_FINETUNE,
    LINEAR_PROBE,
    ZERO_SHOT,
    OverlayResult,
    OverlaySettings,
    clip_inputs,
    readings,
    standardized_clip,
    summarize_clip_overlay,
    zero_shot_probabilities,
)
from medmask.eval.figures import overlay_artifacts
from medmask.models import load_clip
from medmask.preprocess import FindingsDataSettings, FindingsSplits, findings_splits
from medmask.tracking import Tracker, tune_trial_run
from medmask.train import (
    HeadFitSettings,
    PhantomClipSettings,
    fit_cell,
    phantom_clip,
    positive_rows,
    torch_threads,
)
from medmask.tune._sweep import _read_study_id, _write_study_id, check_resume, sweep_folder
from medmask.tune._trainable import TRIAL_ID_TAG

log = logging.getLogger(__name__)

PLUMBING = "plumbing: a phantom-trained CLIP; no conclusion about overlays"
TRIALS_CSV, SELECTION_CSV = "clip_overlay_trials.csv", "clip_overlay_selection.csv"
PROBS = "test_probabilities/"  # + test input: a trial's per-image probabilities [N][K]


@dataclass(frozen=True)
class ClipSweepSettings:
    """What ``sweep=clip_overlay`` runs.

    Attributes:
        name: the sweep (Tune experiment and study run) name.
        overlay: the protocol (:class:`medmask.eval.OverlaySettings`).
        fit: the LP / JFT recipe and its validation selection.
        data: the images (:class:`medmask.data.findings.FindingsDataSettings`).
        seeds: the trained cells' seeds (zero-shot is one trial).
        clip_folder: a local open_clip folder; None: the phantom CLIP (``phantom_clip``).
        phantom_clip: the phantom CLIP's settings (stage cache under ``cache_dir``).
        cache_dir: the stage cache (relative: to the driver's working directory).
        batch_size: test images per forward pass.
        trial_cpus: CPUs each trial reserves (its torch threads: ``fit.threads``).
        max_concurrent_trials: trials at once (None: the cluster's CPUs / ``trial_cpus``).
    """

    name: str
    overlay: OverlaySettings
    fit: HeadFitSettings
    data: FindingsDataSettings
    seeds: tuple[int, ...] = (0, 1, 2)
    clip_folder: str | None = None
    phantom_clip: PhantomClipSettings = dataclasses.field(default_factory=PhantomClipSettings)
    cache_dir: str = "outputs/cache"
    batch_size: int = 64
    trial_cpus: float = 1.0
    max_concurrent_trials: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds or (self.max_concurrent_trials is not None
                              and int(self.max_concurrent_trials) < 1):
            raise ValueError(f"need at least one seed and max_concurrent_trials >= 1, got "
                             f"{self.seeds}, {self.max_concurrent_trials}")


@dataclass(frozen=True)
class ClipSweepResult:
    """What the sweep leaves: the scored grid, the trial and selection tables, the study."""

    result: OverlayResult
    trials: pd.DataFrame
    selections: pd.DataFrame
    path: Path
    study_run_id: str
    restored: bool


def cell_points(seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The trials: one zero-shot, and (lp | jft) x (original | overlay) x seed."""
    points: list[dict[str, Any]] = [{"method": ZERO_SHOT, "train": "none", "seed": 0}]
    points += [{"method": m, "train": t, "seed": int(s)}
               for m in (LINEAR_PROBE, JOINT_FINETUNE) for t in INPUTS for s in seeds]
    return points


def cell_name(point: Mapping[str, Any]) -> str:
    """``lp_overlay_s1``, ``zero_shot``."""
    if point["method"] == ZERO_SHOT:
        return ZERO_SHOT
    return f"{point['method']}_{point['train']}_s{point['seed']}"


def test_probabilities(model: Any, clip: Any, test: Mapping[str, np.ndarray],
                       overlay: OverlaySettings, batch_size: int) -> dict[str, np.ndarray]:
    """Per test input (original, overlay): [N, K] probabilities on the test images with a
    positive finding (zero-shot: ``model`` None)."""
    images, organs, _ = positive_rows(test)
    standard = standardized_clip(clip, overlay)
    out = {}
    for condition in INPUTS:
        parts = []
        for lo in range(0, len(images), batch_size):
            inputs = clip_inputs(images[lo:lo + batch_size], organs[lo:lo + batch_size],
                                 clip.image_size, condition, overlay)
            if model is None:
                parts.append(zero_shot_probabilities(standard, inputs, overlay).numpy())
            else:
                with torch.no_grad():
                    parts.append(torch.sigmoid(model(inputs).double()).numpy())
        out[condition] = np.concatenate(parts)
    return out


def clip_overlay_trial(config: dict[str, Any], splits: FindingsSplits,
                       settings: ClipSweepSettings, context: dict[str, Any]) -> None:
    """The Tune trial: fit one cell (or zero-shot), test it on both inputs, report."""
    from ray import tune

    config = dict(config["cell"])
    name = cell_name(config)
    tracker = Tracker(context["uri"], context["experiment"])
    study = tracker.get(context["study_run_id"])
    trial_id = tune.get_context().get_trial_id()
    tracker.close_stale(TRIAL_ID_TAG, trial_id, superseded=True)
    tags = {"method": config["method"], "train": config["train"], "seed": config["seed"],
            "dataset": settings.data.name, "sweep": settings.name, TRIAL_ID_TAG: trial_id}
    start = time.perf_counter()
    with tune_trial_run(tracker, name, study, params=config, tags=tags) as trial, \
            torch_threads(settings.fit.threads):
        clip = load_clip(context["clip_folder"])
        selection: dict[str, Any] = {}
        model = None
        if config["method"] != ZERO_SHOT:
            model, chosen = fit_cell(clip, splits.split("train"), splits.split("val"),
                                     settings.overlay, settings.fit, config["method"],
                                     config["train"], int(config["seed"]))
            selection = chosen.row()
            trial.log_params({f"selected_{k}": v for k, v in selection.items()})
            trial.log_dict({"curve": {str(k): v for k, v in chosen.curve.items()}},
                           "validation_curve.json")
        probs = test_probabilities(model, clip, splits.split("test"), settings.overlay,
                                   settings.batch_size)
        _, _, targets = positive_rows(splits.split("test"))
        metrics = {f"test/{test}/{r}": float(v.mean()) for test, p in probs.items()
                   for r, v in readings(p, targets.numpy(), settings.overlay.threshold).items()}
        trial.log_metrics({**metrics, "perf/wall_s": time.perf_counter() - start})
    tune.report({**metrics, "trial_name": name,
                 **{f"selected/{k}": v for k, v in selection.items()},
                 **{f"{PROBS}{k}": v.tolist() for k, v in probs.items()}})


def run_clip_overlay_sweep(settings: ClipSweepSettings, tracker: Any, *,
                           storage_dir: str | Path, resume: str = "auto",
                           stopper: Any = None) -> ClipSweepResult:
    """Run (or resume) ``sweep=clip_overlay`` and log Table 2 on the study run (module
    docstring)."""
    from ray import tune

    path, restored = sweep_folder(storage_dir, settings.name, check_resume(resume))
    study_ctx = (tracker.reopen(_read_study_id(path)) if restored
                 else tracker.study(settings.name, tags={"sweep": settings.name,
                                                         "protocol": "clip_overlay"}))
    with study_ctx as study:
        if not restored:
            _write_study_id(path, study.run_id)
            study.log_params(dataclasses.asdict(settings))
        folder = _the_clip(settings, tracker, study)
        splits = findings_splits(settings.data)
        study.log_metrics({f"data/{k}": v for k, v in splits.counts.items()})
        context = {"uri": tracker.uri, "experiment": tracker.experiment,
                   "study_run_id": study.run_id,
                   "clip_folder": str(folder.resolve())}  # trials run in their own folders
        trainable = tune.with_resources(
            tune.with_parameters(clip_overlay_trial, splits=splits, settings=settings,
                                 context=context),
            {"CPU": float(settings.trial_cpus)})
        at_once = settings.max_concurrent_trials or _trials_at_once(settings.trial_cpus)
        if restored:
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"cell": tune.grid_search(cell_points(settings.seeds))},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=int(at_once),
                    reuse_actors=False),
                run_config=tune.RunConfig(name=path.name, storage_path=str(path.parent),
                                          stop=stopper,
                                          failure_config=tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
        _, _, targets = positive_rows(splits.split("test"))
        result, trials, selections = _score(grid, targets.numpy(), settings)
        _log_study(study, result, trials, selections, settings, path)
    return ClipSweepResult(result, trials, selections, path, study.run_id, restored)


def _trials_at_once(trial_cpus: float) -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1) // max(trial_cpus, 1e-9)))


def _the_clip(settings: ClipSweepSettings, tracker: Any, study: Any) -> Path:
    """The CLIP folder: given, or the phantom CLIP (a stage run; stage cache)."""
    if settings.clip_folder:
        return Path(settings.clip_folder)
    with tracker.stage("phantom_clip", parent=study) as stage:
        start = time.perf_counter()
        _, folder, hit = phantom_clip(settings.phantom_clip, settings.overlay,
                                      settings.cache_dir)
        stage.set_tags({"clip_cache_hit": hit})
        stage.log_metrics({"perf/wall_s": time.perf_counter() - start})
    log.info("phantom CLIP %s: %s", "reused" if hit else "trained", folder)
    return folder


def _score(grid: Any, targets: np.ndarray, settings: ClipSweepSettings
           ) -> tuple[OverlayResult, pd.DataFrame, pd.DataFrame]:
    """The grid scored from the trials' probabilities, the trial and selection tables."""
    probs: dict[tuple[str, str | None, str, int], np.ndarray] = {}
    rows, selections = [], []
    seed_index: dict[tuple[str, str | None], list[int]] = {}
    for result in sorted(grid, key=lambda r: str((r.config or {}).get("cell"))):
        metrics, cell = result.metrics or {}, (result.config or {}).get("cell", {})
        if result.error is not None or f"{PROBS}{INPUTS[0]}" not in metrics:
            log.warning("trial %s has no test probabilities (error: %s)", result.path,
                        result.error)
            continue
        method, seed = cell["method"], int(cell["seed"])
        train = None if method == ZERO_SHOT else cell["train"]
        seed_index.setdefault((method, train), []).append(seed)
        for test in INPUTS:
            probs[method, train, test, seed] = np.asarray(metrics[f"{PROBS}{test}"], np.float64)
        rows.append({"trial": metrics.get("trial_name"), "method": method, "train": train,
                     "seed": seed, **{k: v for k, v in metrics.items()
                                      if k.startswith("test/")}})
        if method != ZERO_SHOT:
            selections.append({"method": method, "train": train, "seed": seed,
                               **{k[len("selected/"):]: v for k, v in metrics.items()
                                  if k.startswith("selected/")}})
    if not probs:
        raise RuntimeError("sweep=clip_overlay: no trial reported test probabilities")
    ordered = {(m, t, test, seed): p for (m, t, test, seed), p in
               sorted(probs.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), kv[0][2],
                                                     kv[0][3]))}
    result = summarize_clip_overlay(ordered, targets, settings.overlay)
    return (result, pd.DataFrame(rows).sort_values(["method", "train", "seed"]),
            pd.DataFrame(selections))


def _log_study(study: Any, result: OverlayResult, trials: pd.DataFrame,
               selections: pd.DataFrame, settings: ClipSweepSettings, path: Path) -> None:
    """Table 2's layout, the grid plot, the tables: beside the Tune experiment, then on the
    study run; printed."""
    import matplotlib.pyplot as plt

    overlay = settings.overlay
    title = (f"{PLUMBING}\n" if not settings.clip_folder else "") + (
        f"{settings.name}: alpha {overlay.alpha:g}, {overlay.thickness} px at 224 px; "
        f"{result.images} test images; {overlay.reading} accuracy")
    artifacts = {**overlay_artifacts(result, title), TRIALS_CSV: trials,
                 SELECTION_CSV: selections}
    for name, item in artifacts.items():
        if name.endswith(".png"):
            item.savefig(path / name)
            study.log_figure(item, name)
            plt.close(item)
        else:
            item.to_csv(path / name, index=False)
            study.log_table(item, name)
    show = {"float_format": lambda v: f"{v:.3f}", "index": False}
    text = [PLUMBING] if not settings.clip_folder else []
    text += [f"sweep {settings.name}: {len(trials)} trial(s); Table 2 layout ({overlay.reading} "
             f"accuracy, mean over seeds [95% bootstrap interval over {result.images} test "
             f"images]; alpha {overlay.alpha:g}, contours {overlay.thickness} px at 224 px):",
             result.layout().to_string(index=False)]
    text += [f"{r}:\n{result.layout(r).to_string(index=False)}" for r in ("exact", "top1")
             if r != overlay.reading]
    text += ["baselines on the same test images:\n" + result.baselines.to_string(**show),
             "test-time gain (overlay - original test; paired interval):\n"
             + result.gains.to_string(**show)]
    if not selections.empty:
        text.append(f"selected on validation ({settings.fit.select}):\n"
                    + selections.assign(lr=selections["lr"].map("{:g}".format))
                    .to_string(**show))
    print("\n" + "\n".join(text) + "\n", flush=True)
    (path / "clip_overlay_table2.txt").write_text("\n".join(text) + "\n")

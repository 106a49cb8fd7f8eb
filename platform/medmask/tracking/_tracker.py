"""The run tree in MLflow: study (parent) -> trial (child) -> stage (grandchild).

Every experiment and sweep builds its runs through :class:`Tracker`, so the MLflow UI shows the
same shape everywhere: a study run per invocation, a trial run per configuration (named for
what it is, e.g. ``rgmim-r0.75-frac10-s0``), and stage runs (``preprocess``, ``pretrain``,
``finetune``, ``eval``) holding per-epoch metrics, params, checkpoints and figures.

The client API (explicit run ids) is used instead of MLflow's fluent global state, so Ray
workers can log into a run they did not start (:func:`log_metrics_to_run`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "medmask.kind"
SUPERSEDED_TAG = "medmask.superseded"  # a finished run whose trial Tune ran again after a restore
MAX_PARAM_CHARS = 6000  # MLflow 3's limit on a param value
PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch call
DEFAULT_DB = "mlruns.db"
DEFAULT_ARTIFACTS = "mlartifacts"


@contextmanager
def quiet_store_setup() -> Iterator[None]:
    """Keeps MLflow's INFO lines about creating or migrating a store's tables ("Creating
    initial MLflow database tables...", "Updating database tables") off the console: the
    caller logs the store's URI. Warnings and errors still pass."""
    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def ended_as_it_ends(run: Any, end: Callable[[str], Any]) -> Iterator[Any]:
    """The one run lifecycle: ``end("FAILED")`` if the block raises (then re-raise), else
    ``end("FINISHED")``; every way of opening a run (new, reopened, a Tune trial's) ends so."""
    try:
        yield run
    except BaseException:
        end("FAILED")
        raise
    end("FINISHED")


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # read by the MLflow 3 UI to pick its view
MODEL_TRAINING_KIND = "custom_model_development"  # the model-training view (not GenAI)


class TrackingUnavailableError(RuntimeError):
    """The tracking server cannot be reached (raised before any compute starts)."""


def resolve_tracking_uri(uri: str | None, workdir: str | Path | None = None) -> str:
    """The tracking URI to use: ``uri`` as given, or a local sqlite store in ``workdir``.

    A relative sqlite path is made absolute, so Ray workers with another working directory
    write to the same store.
    """
    base = Path(workdir or os.getcwd()).resolve()
    if not uri:
        return f"sqlite:///{base / DEFAULT_DB}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///") :])
        if not path.is_absolute():
            return f"sqlite:///{(base / path).resolve()}"
    return uri


def check_reachable(uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    url = uri.rstrip("/") + "/health"
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException as err:
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} is unreachable ({type(err).__name__}). Start it "
            f"(e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
            f"sqlite:///mlflow.db`), fix tracking.uri, or set tracking.fallback_local=true "
            f"to log to a local sqlite store instead."
        ) from err
    if response.status_code >= 400:
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} answered {response.status_code} at {url}"
        )


def git_commit() -> str | None:
    """The git commit of the medmask checkout, if it is one."""
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_name(
    strategy: str,
    ratio: float | None = None,
    fraction: float | None = None,
    seed: int | None = None,
    **extra: Any,
) -> str:
    """A readable run name: ``rgmim-r0.75-frac10-s0`` (fraction in percent)."""
    parts = [str(strategy)]
    if ratio is not None:
        parts.append(f"r{float(ratio):g}")
    if fraction is not None:
        parts.append(f"frac{float(fraction) * 100:g}")
    parts.extend(f"{k}{v}" for k, v in extra.items())
    if seed is not None:
        parts.append(f"s{seed}")
    return "-".join(parts)


def standard_tags(
    strategy: str | None = None,
    ratio: float | None = None,
    dataset: str | None = None,
    fraction: float | None = None,
    seed: int | None = None,
    **extra: Any,
) -> dict[str, str]:
    """The tags every trial carries: strategy, ratio, dataset, fraction, seed, ...

    None values are left out; ``git_commit`` is added by :meth:`Tracker.run` itself.
    """
    values = {"strategy": strategy, "ratio": ratio, "dataset": dataset, "fraction": fraction,
              "seed": seed, **extra}
    return {key: str(value) for key, value in values.items() if value is not None}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@dataclass
class Run:
    """One MLflow run, addressed by id (safe to pass to Ray workers as ``(uri, run_id)``)."""

    uri: str
    run_id: str
    name: str
    experiment_id: str

    @property
    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) mapping as params, flattened; long values truncated with a note."""
        from mlflow.entities import Param

        items = []
        for key, value in flatten(params).items():
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            if len(text) > MAX_PARAM_CHARS:
                text = text[: MAX_PARAM_CHARS - 20] + "...[truncated]"
            items.append(Param(key, text))
        for lo in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[lo : lo + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics; NaN/inf values are counted in the run's tags, not logged.

        See :func:`log_metrics_to_run` (tags ``nonfinite_metric_count``, ``nonfinite_metrics``).
        """
        log_metrics_to_run(self.uri, self.run_id, metrics, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            if value is not None:
                self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """An [H, W] or [H, W, 3] array (uint8, or float in [0, 1]) as a PNG artifact."""
        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
        self.client.log_image(self.run_id, array, artifact_file=artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file=artifact_file)

    def log_table(self, table: Any, artifact_file: str) -> None:
        """A pandas DataFrame as a CSV artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            table.to_csv(path, index=False)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact_file)


NONFINITE_COUNT_TAG = "nonfinite_metric_count"  # how many NaN/inf values were not logged
NONFINITE_NAMES_TAG = "nonfinite_metrics"  # which metric names they had (sorted, joined)


def log_metrics_to_run(
    uri: str, run_id: str, metrics: Mapping[str, Any], step: int | None = None
) -> None:
    """Log numeric metrics into an existing run (usable from any Ray worker).

    MLflow stores no NaN/inf points usefully, so they are not logged as metrics; they are
    counted instead, never hidden: the run's tag ``nonfinite_metric_count`` adds them up over
    the run's calls and ``nonfinite_metrics`` names the metrics they came from.
    """
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    items, nonfinite = [], []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            continue
        if not math.isfinite(float(value)):
            nonfinite.append(str(key))
            continue
        items.append(Metric(key, float(value), now, int(step or 0)))
    client = MlflowClient(tracking_uri=uri)
    if items:
        client.log_batch(run_id, metrics=items)
    if nonfinite:
        tags = client.get_run(run_id).data.tags
        count = int(tags.get(NONFINITE_COUNT_TAG, "0")) + len(nonfinite)
        names = set(filter(None, tags.get(NONFINITE_NAMES_TAG, "").split(","))) | set(nonfinite)
        client.set_tag(run_id, NONFINITE_COUNT_TAG, str(count))
        client.set_tag(run_id, NONFINITE_NAMES_TAG, ",".join(sorted(names))[:5000])


MLFLOW_SCHEME = "mlflow:"  # a model reference: mlflow:<run_id>[/<artifact path>]
CHECKPOINT_FILE = "checkpoint.pt"


class Tracker:
    """Creates the study -> trial -> stage runs of one MLflow experiment.

    Args:
        uri: tracking URI (None: ``sqlite:///<cwd>/mlruns.db``; or a server URL).
        experiment: MLflow experiment name (one per study).
        artifact_root: where a new experiment stores artifacts (default: ``mlartifacts/``
            beside a sqlite store; the server's default for a server).
        fallback_local: when the server is unreachable, log to a local sqlite store (and say
            where) instead of failing.
    """

    def __init__(
        self,
        uri: str | None = None,
        experiment: str = "medmask",
        *,
        artifact_root: str | Path | None = None,
        fallback_local: bool = False,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        self.unreachable_uri: str | None = None  # set when we fell back to a local store
        try:
            check_reachable(self.uri)
        except TrackingUnavailableError as err:
            if not fallback_local:
                raise
            self.unreachable_uri, self.uri = self.uri, resolve_tracking_uri(None)
            log.warning("%s Logging locally to %s instead.", err, self.uri)
        self.experiment = experiment
        with quiet_store_setup():  # the client creates a new sqlite store's tables
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment_id(experiment, artifact_root)
        self.commit = git_commit()

    def ui_link(self, server: str = "http://127.0.0.1:5000") -> str:
        """The experiment's page in the MLflow UI, on its model-training view.

        MLflow 3.17's UI opens every experiment in its GenAI view unless the browser last chose
        "Model training" (a toggle kept in the browser's local storage; the experiment's
        ``mlflow.experimentKind`` tag is not consulted): the ``workflowType`` parameter of the
        link selects the model-training view (runs, charts, compare). ``server`` is where
        ``mlflow ui`` serves a local store; an HTTP tracking URI is its own server.
        """
        base = self.uri if self.uri.startswith(("http://", "https://")) else server
        return (f"{base.rstrip('/')}/#/experiments/{self.experiment_id}"
                f"?workflowType=machine_learning")

    def _experiment_id(self, name: str, artifact_root: str | Path | None) -> str:
        """The experiment's id (created if missing), tagged as a model-training experiment:
        MLflow 3 opens an untagged experiment in its GenAI view, where stage runs are listed
        as "Evaluation runs"."""
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            if existing.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
                self.client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG,
                                               MODEL_TRAINING_KIND)
            return existing.experiment_id
        location = None
        if artifact_root is not None:
            location = Path(artifact_root).resolve().as_uri()
        elif self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///") :])
            location = (db.parent / DEFAULT_ARTIFACTS / name).resolve().as_uri()
        return self.client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})

    @contextmanager
    def run(
        self,
        name: str,
        *,
        kind: str,
        parent: Run | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[Run]:
        """Start a run (``kind`` = study | trial | stage) and end it FINISHED or FAILED."""
        all_tags = {KIND_TAG: kind, "git_commit": self.commit, **(tags or {})}
        if parent is not None:
            all_tags[PARENT_TAG] = parent.run_id
        info = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={k: str(v) for k, v in all_tags.items() if v is not None},
        ).info
        run = Run(self.uri, info.run_id, name, self.experiment_id)
        with ended_as_it_ends(run, lambda status: self.client.set_terminated(run.run_id, status)):
            yield run

    def get(self, run_id: str) -> Run:
        """An existing run by id (e.g. the study run a Tune trial nests under)."""
        info = self.client.get_run(run_id).info
        return Run(self.uri, run_id, info.run_name, info.experiment_id)

    @contextmanager
    def reopen(self, run_id: str) -> Iterator[Run]:
        """Continue an existing run (a resumed sweep's study run), ending it as :meth:`run`."""
        run = self.get(run_id)
        self.client.update_run(run_id, status="RUNNING")
        with ended_as_it_ends(run, lambda status: self.client.set_terminated(run_id, status)):
            yield run

    def close_stale(self, tag: str, value: str, status: str = "KILLED", *,
                    superseded: bool = False) -> list[str]:
        """End the still-RUNNING runs tagged ``tag=value`` and their RUNNING descendants.

        A resumed Tune trial calls this with its trial id: the run its interrupted first
        attempt left open is closed (``KILLED``), so each trial has one finished run. With
        ``superseded``, a FINISHED run tagged ``tag=value`` is ended ``status`` too and tagged
        :data:`SUPERSEDED_TAG`: a trial whose function finished just as the sweep was
        interrupted, before Tune recorded it, is run again by ``Tuner.restore``, and the new
        attempt's run is the trial's one finished run.
        """
        query = f"tags.`{tag}` = '{value}'"
        stale = self._running(query)
        if superseded:
            for run in self.client.search_runs([self.experiment_id], query):
                if run.info.status == "FINISHED":
                    self.client.set_tag(run.info.run_id, SUPERSEDED_TAG, "true")
                    stale.append(run.info.run_id)
        closed = []
        while stale:
            run_id = stale.pop()
            self.client.set_terminated(run_id, status)
            closed.append(run_id)
            stale += self._running(f"tags.`{PARENT_TAG}` = '{run_id}'")
        return closed

    def _running(self, query: str) -> list[str]:
        runs = self.client.search_runs([self.experiment_id], query)
        return [r.info.run_id for r in runs if r.info.status == "RUNNING"]

    def download_checkpoint(self, reference: str, destination: str | Path,
                            filename: str = CHECKPOINT_FILE) -> Path:
        """The checkpoint artifact of a run, downloaded into ``destination``; returns its path.

        ``reference``: ``mlflow:<run_id>`` (the run must hold exactly one ``filename``
        artifact, searched through its artifact folders) or ``mlflow:<run_id>/<artifact
        path>`` (a file, or a folder holding ``filename``); a bare run id is accepted too.

        Raises:
            ValueError: an unknown run, no such artifact, or several candidates (named).
        """
        from mlflow.exceptions import MlflowException

        body = reference[len(MLFLOW_SCHEME):] if reference.startswith(MLFLOW_SCHEME) else reference
        run_id, _, artifact = body.partition("/")
        try:
            self.client.get_run(run_id)
        except MlflowException as error:
            raise ValueError(f"no MLflow run {run_id!r} in {self.uri} (from {reference!r}): "
                             f"{str(error).splitlines()[0]}") from None
        candidates = self._artifact_files(run_id, artifact, filename)
        if len(candidates) != 1:
            found = "none" if not candidates else ", ".join(candidates)
            raise ValueError(f"MLflow run {run_id} ({self.uri}) must hold exactly one "
                             f"{filename!r} artifact under {artifact or 'its root'!r}, found "
                             f"{found}; name one as mlflow:{run_id}/<artifact path>")
        local = self.client.download_artifacts(run_id, candidates[0], str(destination))
        return Path(local)

    def _artifact_files(self, run_id: str, under: str, filename: str) -> list[str]:
        """Paths of the ``filename`` artifacts at or under ``under`` (or ``under`` itself)."""
        entries = self.client.list_artifacts(run_id, under or None)
        if under and not entries:  # a file, not a folder
            parent = str(Path(under).parent)
            siblings = self.client.list_artifacts(run_id, None if parent == "." else parent)
            return [a.path for a in siblings if a.path == under and not a.is_dir]
        found = []
        for entry in entries:
            if entry.is_dir:
                found += self._artifact_files(run_id, entry.path, filename)
            elif Path(entry.path).name == filename:
                found.append(entry.path)
        return found

    def study(self, name: str, **kw: Any) -> Any:
        return self.run(name, kind="study", **kw)

    def trial(self, name: str, parent: Run, **kw: Any) -> Any:
        return self.run(name, kind="trial", parent=parent, **kw)

    def stage(self, name: str, parent: Run, **kw: Any) -> Any:
        return self.run(name, kind="stage", parent=parent, **kw)

"""MLflow helpers: the only room of medmask that talks to MLflow.

:class:`Tracker` builds the run tree study -> trial -> stage; :class:`Run` logs params (every
resolved config value, flattened), metrics, images, figures, tables and files;
:func:`log_metrics_to_run` lets a Ray worker log into a run it did not start;
:func:`tune_trial_run` makes a Tune trial's run (Ray's ``setup_mlflow``) a child of the study.
"""

from medmask.tracking._tracker import (
    KIND_TAG,
    MLFLOW_SCHEME,
    PARENT_TAG,
    SUPERSEDED_TAG,
    Run,
    Tracker,
    TrackingUnavailableError,
    check_reachable,
    flatten,
    git_commit,
    log_metrics_to_run,
    resolve_tracking_uri,
    run_name,
    standard_tags,
)
from medmask.tracking._tune import tune_trial_run

__all__ = [
    "KIND_TAG",
    "MLFLOW_SCHEME",
    "PARENT_TAG",
    "SUPERSEDED_TAG",
    "Run",
    "Tracker",
    "TrackingUnavailableError",
    "check_reachable",
    "flatten",
    "git_commit",
    "log_metrics_to_run",
    "resolve_tracking_uri",
    "run_name",
    "standard_tags",
    "tune_trial_run",
]

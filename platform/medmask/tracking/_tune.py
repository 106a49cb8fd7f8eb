"""Trial runs of a Ray Tune sweep through Ray's MLflow integration, nested under the study.

Ray's ``setup_mlflow`` starts one MLflow run per trial inside the trial process, but flat and
named after Ray's trial (``trainable_f6e7e_00002``). :func:`tune_trial_run` extends it for the
medmask run tree: the run is named for what it is (``rgmim-r0.75-frac10-s0``), carries the
parent tag of the study run and the standard tags, and comes back as a :class:`Run` so stage
runs (pretrain, finetune) nest under it through the same :class:`Tracker`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from medmask.tracking._tracker import KIND_TAG, PARENT_TAG, Run, Tracker, ended_as_it_ends


@contextmanager
def tune_trial_run(
    tracker: Tracker,
    name: str,
    parent: Run,
    *,
    params: Mapping[str, Any],
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Run]:
    """Start the trial's MLflow run with Ray's ``setup_mlflow``; end it FINISHED or FAILED.

    Args:
        tracker: the sweep's tracker (its URI and experiment).
        name: the readable trial name.
        parent: the study run the trial nests under.
        params: the trial's sampled hyperparameters (logged by ``setup_mlflow``; log the full
            resolved settings with :meth:`Run.log_params` as well).
        tags: extra tags (strategy, ratio, fraction, seed, ...).
    """
    from ray.air.integrations.mlflow import setup_mlflow

    all_tags = {KIND_TAG: "trial", PARENT_TAG: parent.run_id, "git_commit": tracker.commit,
                **(tags or {})}
    mlflow = setup_mlflow(
        dict(params),
        tracking_uri=tracker.uri,
        experiment_id=tracker.experiment_id,
        run_name=name,
        tags={k: str(v) for k, v in all_tags.items() if v is not None},
    )
    run_id = mlflow.active_run().info.run_id
    run = Run(tracker.uri, run_id, name, tracker.experiment_id)
    with ended_as_it_ends(run, lambda status: mlflow.end_run(status=status)):
        yield run

import socket
import time

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from medmask.tracking import (
    KIND_TAG,
    PARENT_TAG,
    Tracker,
    TrackingUnavailableError,
    flatten,
    git_commit,
    resolve_tracking_uri,
    run_name,
    standard_tags,
)
from medmask.tracking._tracker import NONFINITE_COUNT_TAG, NONFINITE_NAMES_TAG


def test_run_names_say_what_they_are():
    assert run_name("rgmim", ratio=0.75, fraction=0.1, seed=0) == "rgmim-r0.75-frac10-s0"
    assert run_name("random", ratio=0.4) == "random-r0.4"
    assert run_name("ahm", ratio=0.6, fraction=0.01, seed=2, p=0.25) == "ahm-r0.6-frac1-p0.25-s2"


def test_standard_tags_leave_out_unknowns():
    assert standard_tags("rgmim", 0.75, "phantom", 0.1, 0) == {
        "strategy": "rgmim", "ratio": "0.75", "dataset": "phantom", "fraction": "0.1",
        "seed": "0"}
    assert standard_tags(strategy="random", seed=3) == {"strategy": "random", "seed": "3"}


def test_flatten_and_relative_sqlite(tmp_path):
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": "x"}
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == f"sqlite:///{tmp_path / 'x.db'}"


def test_study_trial_stage_tree_read_back(mlflow_uri, tmp_path):
    tracker = Tracker(mlflow_uri, "study-test")
    params = {f"p{i}": i for i in range(150)} | {"nested": {"long": "x" * 7000}}
    with tracker.study("ratio-study") as study:  # noqa: SIM117 (the tree, level by level)
        with tracker.trial("rgmim-r0.75-s0", parent=study, tags={"strategy": "rgmim"}) as trial:
            with tracker.stage("pretrain", parent=trial) as stage:
                stage.log_params(params)
                for epoch in range(3):
                    stage.log_metrics({"train/loss": 1.0 / (epoch + 1), "bad": float("nan")},
                                      step=epoch)
                stage.log_image(np.zeros((8, 8), np.float32), "gallery.png")
                stage.log_table(pd.DataFrame({"a": [1, 2]}), "tables/summary.csv")
                stage.log_dict({"images": 3}, "counts.json")
    client = MlflowClient(mlflow_uri)
    runs = {r.info.run_name: r for r in client.search_runs([tracker.experiment_id])}
    assert set(runs) == {"ratio-study", "rgmim-r0.75-s0", "pretrain"}
    assert runs["rgmim-r0.75-s0"].data.tags[PARENT_TAG] == runs["ratio-study"].info.run_id
    assert runs["pretrain"].data.tags[PARENT_TAG] == runs["rgmim-r0.75-s0"].info.run_id
    assert runs["pretrain"].data.tags[KIND_TAG] == "stage"
    assert runs["rgmim-r0.75-s0"].data.tags["strategy"] == "rgmim"
    stage_run = runs["pretrain"]
    assert len(stage_run.data.params) == 151
    assert stage_run.data.params["nested.long"].endswith("...[truncated]")
    history = client.get_metric_history(stage_run.info.run_id, "train/loss")
    assert [m.value for m in history] == pytest.approx([1.0, 0.5, 1 / 3])
    assert "bad" not in stage_run.data.metrics  # not logged, but counted (3 epochs)
    assert stage_run.data.tags[NONFINITE_COUNT_TAG] == "3"
    assert stage_run.data.tags[NONFINITE_NAMES_TAG] == "bad"
    assert NONFINITE_COUNT_TAG not in runs["ratio-study"].data.tags
    files = {f.path for f in client.list_artifacts(stage_run.info.run_id)}
    assert {"gallery.png", "tables", "counts.json"} <= files
    table = client.download_artifacts(stage_run.info.run_id, "tables/summary.csv", str(tmp_path))
    assert pd.read_csv(table)["a"].tolist() == [1, 2]
    commit = git_commit()
    assert commit is None or len(commit) == 40
    assert stage_run.data.tags.get("git_commit") == commit
    assert all(r.info.status == "FINISHED" for r in runs.values())


def test_failed_stage_is_marked_failed(mlflow_uri):
    tracker = Tracker(mlflow_uri, "fail-test")
    with pytest.raises(RuntimeError), tracker.study("s") as study:
        raise RuntimeError("boom")
    assert MlflowClient(mlflow_uri).get_run(study.run_id).info.status == "FAILED"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_or_falls_back(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    with pytest.raises(TrackingUnavailableError, match=uri):
        Tracker(uri, "x")
    assert time.perf_counter() - start < 10
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(uri, "x", fallback_local=True)
    assert tracker.uri == f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert tracker.unreachable_uri == uri
    with tracker.study("fallback") as study:
        study.log_metrics({"x": 1.0})
    assert MlflowClient(tracker.uri).get_run(study.run_id).data.metrics == {"x": 1.0}
    artifact_uri = MlflowClient(tracker.uri).get_experiment(tracker.experiment_id).artifact_location
    assert artifact_uri == (tmp_path / "mlartifacts" / "x").as_uri()


def test_the_ui_link_opens_the_model_training_view(mlflow_uri):
    """MLflow 3.17's UI opens an experiment in its GenAI view whatever the experiment's tags
    (checked by hand in Chromium): the link carries ``workflowType=machine_learning``."""
    tracker = Tracker(mlflow_uri, "ui-link")
    link = tracker.ui_link()
    assert link == (f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}"
                    "?workflowType=machine_learning")
    assert tracker.ui_link("http://host:8080/").startswith("http://host:8080/#/experiments/")


def test_a_new_sqlite_store_is_created_quietly(tmp_path):
    """MLflow's "Creating initial MLflow database tables..." lines stay off the console of a
    first run on a fresh clone (a fresh interpreter: MLflow sets up its logging at import)."""
    import os
    import subprocess
    import sys

    code = ("import logging; from medmask.tracking import Tracker; "
            f"Tracker('sqlite:///{tmp_path / 'new.db'}'); "
            "print(logging.getLogger('mlflow.store.db.utils').level)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new.db").exists()
    assert "database tables" not in result.stderr + result.stdout, result.stderr
    assert result.stdout.split()[-1] == "0"  # the logger's own level is restored afterwards

"""A tiny masking-ratio sweep end to end against a real MLflow server on 127.0.0.1.

2 strategies x 2 ratios x 1 seed, 1 + 1 epochs of the tiny ViT on 64-px phantoms, two trials
at a time. The sweep is interrupted (SIGINT, as Ctrl+C) once the first two trials have
finished, while the next two have just started, and then restored with ``Tuner.restore``: the
finished trials are not run again, the interrupted ones are, and the MLflow run tree holds
exactly one finished study, four trials and eight stages, read back through the client.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from medmask.tracking import KIND_TAG, PARENT_TAG, Tracker
from medmask.tune import Concurrency, SweepSpec, run_sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import STRATEGIES, tiny_settings  # noqa: E402

RATIOS = [0.3, 0.6]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory,
                  mlflow_template: Path) -> Iterator[str]:
    """``mlflow server`` with a sqlite backend in a temp folder, on a free local port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copyfile(mlflow_template, root / "mlflow.db")  # a fresh store, schema ready
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--default-artifact-root", str(root / "artifacts"), "--workers", "1"]
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log')}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own process group only
        try:  # its workers shut down gracefully for up to 30 s: a throwaway store does not need it
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


class InterruptAfter(Callback):
    """Send this process SIGINT (Ctrl+C) once ``count`` trials have finished (once ever)."""

    def __init__(self, count: int, marker: Path) -> None:
        self.count = count
        self.marker = marker
        self.finished = 0

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        self.finished += 1
        if self.finished >= self.count and not self.marker.exists():
            self.marker.write_text("interrupted\n")
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.e2e
@pytest.mark.slow
def test_sweep_logs_run_tree_to_server_and_resumes(ray_session, mlflow_server, tmp_path):
    tracker = Tracker(mlflow_server, "sweep-e2e")
    spec = SweepSpec(name="ratio-e2e", space={"strategy": ["random", "rgmim"],
                                              "ratio": RATIOS, "seed": [0]},
                     strategies=STRATEGIES)
    settings = tiny_settings(tmp_path)
    kwargs = {"storage_dir": tmp_path / "sweeps", "concurrency": Concurrency(2)}
    interrupt = InterruptAfter(2, tmp_path / "interrupted")

    first = run_sweep(settings, spec, tracker, callbacks=[interrupt], **kwargs)
    assert not first.restored and 2 <= len(first.trials) < 4
    done_first = set(first.trials["trial"])
    client = MlflowClient(mlflow_server)
    finished_ids = {
        r.info.run_name: r.info.run_id
        for r in client.search_runs([tracker.experiment_id], f"tags.`{KIND_TAG}` = 'trial'")
        if r.info.run_name in done_first
    }

    second = run_sweep(settings, spec, tracker, **kwargs)
    assert second.restored and second.study_run_id == first.study_run_id
    expected = {f"{s}-r{r:g}-frac100-s0" for s in ("random", "rgmim") for r in RATIOS}
    assert set(second.trials["trial"]) == expected

    every_run = client.search_runs([tracker.experiment_id], "")
    assert not [r.info.run_name for r in every_run if r.info.status == "RUNNING"]
    runs = [r for r in every_run if r.info.status == "FINISHED"]
    by_kind: dict[str, list] = {"study": [], "trial": [], "stage": []}
    for run in runs:
        by_kind[run.data.tags[KIND_TAG]].append(run)
    (study,) = by_kind["study"]
    trials = {r.info.run_name: r for r in by_kind["trial"]}
    assert len(by_kind["trial"]) == 4 and set(trials) == expected
    for name, run_id in finished_ids.items():  # finished before the interruption: not re-run
        assert trials[name].info.run_id == run_id
    assert all(r.data.tags[PARENT_TAG] == study.info.run_id for r in trials.values())

    trial = trials["rgmim-r0.6-frac100-s0"]
    tags, params = trial.data.tags, trial.data.params
    assert (tags["strategy"], tags["ratio"], tags["fraction"], tags["seed"]) == (
        "rgmim", "0.6", "1.0", "0")
    assert tags["dataset"] == "phantom" and "git_commit" in tags
    assert params["masking.name"] == "rgmim" and params["masking.ratio"] == "0.6"
    assert params["pretrain.epochs"] == "1" and params["model.name"] == "mae_vit_tiny_64"
    assert 0.0 <= trial.data.metrics["test/accuracy"] <= 1.0
    # one metric name across the trial runs, the swept values as params: the UI compares them
    assert (params["strategy"], params["ratio"]) == ("rgmim", "0.6")
    assert all("test/accuracy" in r.data.metrics for r in trials.values())
    assert not [k for k in study.data.metrics if k.startswith("summary/")]

    stages = [r for r in by_kind["stage"] if r.data.tags[PARENT_TAG] in
              {t.info.run_id for t in trials.values()}]
    assert len(stages) == 8
    assert sorted(r.info.run_name for r in stages) == ["finetune"] * 4 + ["pretrain"] * 4
    pretrain = next(r for r in stages if r.info.run_name == "pretrain"
                    and r.data.tags[PARENT_TAG] == trial.info.run_id)
    assert [m.step for m in client.get_metric_history(pretrain.info.run_id, "train/loss")] == [0]
    finetune = next(r for r in stages if r.info.run_name == "finetune"
                    and r.data.tags[PARENT_TAG] == trial.info.run_id)
    assert finetune.data.metrics["test/accuracy"] == trial.data.metrics["test/accuracy"]
    assert "val/accuracy" in finetune.data.metrics

    files = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert {"trials.csv", "summary.csv", "accuracy_vs_ratio.png"} <= files
    summary = pd.read_csv(client.download_artifacts(study.info.run_id, "summary.csv",
                                                    str(tmp_path)))
    assert len(summary) == 4 and set(summary["strategy"]) == {"random", "rgmim"}
    assert sorted(set(summary["ratio"])) == RATIOS and (summary["n"] == 1).all()

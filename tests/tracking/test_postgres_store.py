"""MLflow on a real PostgreSQL server (the docker compose file's backend store): a sweep's run
tree logged through :class:`medmask.tracking.Tracker` and read back.

The test runs its own server: ``initdb`` + ``pg_ctl`` in a temporary folder, on a free loopback
port, stopped at the end (as the ``postgres`` user when the tests run as root: PostgreSQL
refuses to run as root). ``.ci/run`` installs Debian's ``postgresql`` where it is missing; with
``CI=true`` a missing server or driver fails the test, elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medmask.tracking import Tracker


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs Debian's postgresql)")
    pytest.skip(reason)


def _postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on the PATH or in Debian's versioned folders."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_uri() -> Iterator[str]:
    """A PostgreSQL server of this test alone; its SQLAlchemy URI for MLflow."""
    pg_bin = _postgres_bin()
    if pg_bin is None:
        _unavailable("PostgreSQL is not installed (initdb/pg_ctl not found)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 (the dev dependency psycopg2-binary) is not installed")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # its own short folder (the unix socket path must stay short; pytest's tmp_path is 0700)
    root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    if as_postgres:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_postgres, *command], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}\n{done.stderr}"

    run(str(pg_bin / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8",
        "--no-sync")
    try:
        run(str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        run(str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow",
            "mlflow")
        # the driver named, as in the compose file: SQLAlchemy 2.1's default for a bare
        # postgresql:// is psycopg 3, which is not installed
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_postgres, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_a_sweep_run_tree_on_postgresql(postgres_uri: str, tmp_path: Path) -> None:
    tracker = Tracker(postgres_uri, "sweep-postgres", artifact_root=tmp_path / "artifacts")
    trial_ids = {}
    with tracker.study("sweep-masking_ratio", tags={"sweep": "masking_ratio"}) as study:
        for strategy, ratio in (("random", 0.6), ("rgmim", 0.75)):
            name = f"{strategy}-r{ratio}-frac100-s0"
            with tracker.trial(name, parent=study, tags={"strategy": strategy}) as trial:
                trial.log_params({"strategy": strategy, "ratio": ratio})
                trial_ids[name] = trial.run_id
                for stage_name, metric in (("pretrain", "train/loss"),
                                           ("finetune", "val/accuracy")):
                    with tracker.stage(stage_name, parent=trial) as stage:
                        for epoch in range(3):
                            stage.log_metrics({metric: ratio / (epoch + 1)}, step=epoch)
                trial.log_metrics({"test/accuracy": ratio})
        study.log_dict({"trials": sorted(trial_ids)}, "trials.json")
    # a resumed trial closes what its interrupted attempt left RUNNING (tag search in SQL)
    with tracker.study("sweep-resumed") as resumed, \
            tracker.trial("left-open", parent=resumed, tags={"trial_id": "abc"}) as left:
        tracker.client.update_run(left.run_id, status="RUNNING")
        assert tracker.close_stale("trial_id", "abc") == [left.run_id]
        assert tracker.client.get_run(left.run_id).info.status == "KILLED"

    client = MlflowClient(postgres_uri)  # a fresh client: read back from the database
    runs = client.search_runs([tracker.experiment_id], max_results=100)
    by_name: dict[str, list] = {}
    for run in runs:
        by_name.setdefault(run.info.run_name, []).append(run)
    study_run = by_name["sweep-masking_ratio"][0]
    assert study_run.data.tags["sweep"] == "masking_ratio"
    assert "trials.json" in {a.path for a in client.list_artifacts(study_run.info.run_id)}
    for name, run_id in trial_ids.items():
        trial = client.get_run(run_id)
        assert trial.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        assert trial.data.params["strategy"] == name.split("-")[0]
        assert trial.info.status == "FINISHED"
        stages = client.search_runs([tracker.experiment_id],
                                    f"tags.`mlflow.parentRunId` = '{run_id}'")
        assert sorted(s.info.run_name for s in stages) == ["finetune", "pretrain"]
        pretrain = next(s for s in stages if s.info.run_name == "pretrain")
        history = client.get_metric_history(pretrain.info.run_id, "train/loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2]

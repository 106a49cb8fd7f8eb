"""End to end: experiments/preprocess.py as a user runs it (subprocess, local Ray, sqlite)."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_preprocess_rgmim_writes_parquet_gallery_and_mlflow_runs(tmp_path, mlflow_uri):
    uri = mlflow_uri  # a fresh store, schema ready
    out = tmp_path / "out"
    cmd = [
        sys.executable, str(ROOT / "experiments" / "preprocess.py"),
        "masking=rgmim", "masking.ratio=0.5", "grid.patch_size=8",
        "data.n=24", "data.size=64", "data.chunk=8", "seed=1",
        f"tracking.uri={uri}", "tracking.experiment=pp-test", f"output_dir={out}",
        "cluster.num_cpus=2", f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 24 and 0 < summary["mean_valid_fraction"] < 1
    table = pq.read_table(out / "dataset")
    assert table.num_rows == 24
    assert {"id", "image", "organs", "mask", "masked_image"} <= set(table.column_names)
    assert all(sum(m) == 32 for m in table.column("mask").to_pylist())  # floor(0.5 * 64)
    assert (out / "gallery_rgmim.png").stat().st_size > 0

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("pp-test")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    stage = runs["preprocess"]
    assert stage.data.params["masking.name"] == "rgmim"
    assert stage.data.params["data.n"] == "24"
    assert stage.data.metrics["data/images"] == 24
    assert stage.data.tags["strategy"] == "rgmim"
    assert stage.data.tags["dataset"] == "phantom" and stage.data.tags["seed"] == "1"
    assert stage.data.metrics["data/empty_organs"] == 0 == stage.data.metrics["data/bad_image"]
    study, trial = runs["preprocess-phantom"], runs["rgmim-r0.5-s1"]
    assert stage.data.tags["mlflow.parentRunId"] == trial.info.run_id
    assert trial.data.tags["mlflow.parentRunId"] == study.info.run_id
    artifacts = {a.path for a in client.list_artifacts(stage.info.run_id)}
    assert {"gallery_rgmim.png", "counts.json"} <= artifacts
    assert "MLflow  : " + uri in done.stdout and "dataset : " in done.stdout


def test_bad_ratio_fails_before_compute(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "preprocess.py"), "masking.ratio=1.5",
           f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", f"hydra.run.dir={tmp_path / 'h'}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ratio must be in [0, 1), got 1.5" in done.stderr
    assert not (tmp_path / "m.db").exists()  # failed before tracking or Ray started


def test_unknown_strategy_lists_the_valid_ones(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "preprocess.py"), "masking.name=nope",
           f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", f"hydra.run.dir={tmp_path / 'h'}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "'nope'" in done.stderr and "rgmim" in done.stderr
    assert not (tmp_path / "m.db").exists()

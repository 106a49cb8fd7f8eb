"""End to end: the AHM pipeline submitted with `ray job submit` to a real head node on loopback.

The head is started with `ray start --head --block` on free loopback ports and stopped by its
PID (never `ray stop`, which would end every Ray on the machine). Ray 2.60 requires token
authentication for job submission: `RAY_AUTH_MODE=token` in the environment of both commands.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A config far tinier than the quick default: 1 epoch everywhere, 10 s of policy training, one
# of the three fine-tuning methods (the results table over several methods and seeds is
# tests/experiments/test_ahm_summary.py's).
TINY = [
    "data.n_train=48", "data.n_val=16", "data.n_test=32", "data.size=32",
    "model.params.img_size=32", "model.params.patch_size=8",
    "train.pretrain.epochs=1", "train.segmentation.epochs=1", "train.segmentation.min_steps=0",
    "segmentation.fractions=[1.0]", "segmentation.methods=[ahm]",
    "policy.budget.time_budget_s=10", "policy.eval_images=32", "seed=3",
]


NO_AGENT = "No available agent to submit job"  # HTTP 500 while the head is still starting
AGENT_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
               "runtime-env-agent-port", "ray-client-server-port", "node-manager-port",
               "object-manager-port")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode} (see head.log)")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (token auth may refuse an unauthenticated request): it is up
        except OSError:
            time.sleep(1.0)
    raise TimeoutError(f"the job server at {url} did not come up in {timeout_s} s")


@pytest.mark.slow
@pytest.mark.e2e
def test_ahm_pipeline_runs_through_ray_job_submit(tmp_path: Path, mlflow_uri: str) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    dashboard = _free_port()
    url = f"http://127.0.0.1:{dashboard}"
    # Ray's unix sockets live under --temp-dir and their paths must stay under ~107 chars:
    # pytest's tmp_path is too deep, so the head gets a short folder of its own.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayjob-", dir="/tmp"))
    head_log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={_free_port()}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", "--num-cpus=2", "--disable-usage-stats",
         f"--temp-dir={ray_tmp}",
         # the test session's own Ray holds the default agent ports: take free ones
         *(f"--{name}={_free_port()}" for name in AGENT_PORTS)],
        env=env, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = mlflow_uri  # a fresh store, schema ready
    try:
        _wait_for_dashboard(url, head)
        command = [
            str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(ROOT),
            "--", "python", "experiments/ahm.py", *TINY, f"tracking.uri={uri}",
            "tracking.experiment=ahm-job", f"cache_dir={tmp_path / 'cache'}",
            f"storage_dir={tmp_path / 'ray'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
        deadline = time.monotonic() + 120
        while True:  # the dashboard answers before its job agent is ready
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            if NO_AGENT not in done.stdout + done.stderr or time.monotonic() > deadline:
                break
            time.sleep(2.0)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)  # ends this head (and only it)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        head_log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output and "AHM segmentation results" in output

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ahm-job")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    expected = {"ahm-ahm-r0.75-s3", "pipeline", "reconstruction", "policy", "pretrain-ahm",
                "segment-ahm-frac100"}
    assert expected <= set(runs), sorted(runs)
    study = runs["ahm-ahm-r0.75-s3"]
    for key in ("policy_mask_recon_loss", "random_mask_recon_loss"):
        assert 0 < study.data.metrics[key] < 1
    assert "test/ahm/frac100/dice" in study.data.metrics
    policy = runs["policy"]
    history = client.get_metric_history(policy.info.run_id, "charts/mean_reward")
    assert len(history) >= 1 and "charts/SPS" in policy.data.metrics
    artifacts = {a.path for a in client.list_artifacts(policy.info.run_id)}
    assert {"policy", "reward_curve.png", "ahm_fig8.png", "reward_history.csv"} <= artifacts
    assert "results.csv" in {a.path for a in client.list_artifacts(study.info.run_id)}
    segment = runs["segment-ahm-frac100"]
    assert 0 <= segment.data.metrics["test/dice"] <= 1
    assert segment.data.tags["mlflow.parentRunId"] == runs["pipeline"].info.run_id

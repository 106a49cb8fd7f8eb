"""The segmentation-guided SSL study's machinery through Tune, tiny: one trial, the
seg_attention arm (option 5 on Ray Train: its per-epoch mask measures reach MLflow), linear
probing on the phantom findings, with the convergence probe: the trial table carries per-label
AUCs and pretraining costs, and the study run holds the guide-layout comparison (smoke-labelled,
against the arm itself) and the bar plot. (The study itself is timed by hand, kept out of CI.)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medmask.tracking import Tracker
from medmask.train import HeadSettings
from medmask.tune import Concurrency, SweepSpec, run_sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import tiny_settings  # noqa: E402

FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
CNN = {"width": 0.125, "proj_dim": 16}


@pytest.mark.study  # a whole Tune study: run by hand (make test-studies), not in make test
@pytest.mark.slow  # one trial = two TorchTrainer fits: 10 min 04 s at load 10-20 on 2 CPUs
@pytest.mark.e2e
def test_a_method_sweep_logs_the_comparison(ray_session, tmp_path, mlflow_uri):
    base = tiny_settings(tmp_path)
    settings = dataclasses.replace(
        base, data={**base.data, "size": 32, "chunk": 32},
        head=HeadSettings(5, multilabel=True, class_names=FINDINGS))
    spec = SweepSpec(
        name="seg_guided_tiny", space={"method": ["seg_attention"], "mode": ["linear_probe"],
                                       "seed": [0]},
        methods={"seg_attention": {"model": {"name": "seg_attention_cnn_tiny",
                                             "params": {**CNN, "img_size": 32}}}},
        metric="auc_mean", x="mode", group="method", plot="bars", smoke=True,
        baseline="seg_attention", probe_every=1)
    tracker = Tracker(mlflow_uri, "seg-guided-test")
    result = run_sweep(settings, spec, tracker, storage_dir=tmp_path / "sweeps",
                       concurrency=Concurrency(1))
    trials = result.trials.set_index("method")
    assert list(trials.index) == ["seg_attention"]
    assert {"auc/Edema", "auc_nan_count", "step_s", "peak_rss_mb", "convergence_epoch"} <= set(
        trials.columns)
    assert (trials["convergence_epoch"] == 0).all()  # one epoch: the first is the best
    comparison = (result.path / "comparison.txt").read_text()
    assert comparison.startswith("SMOKE RUN") and "seg_attention" in comparison
    client = MlflowClient(mlflow_uri)
    artifacts = {a.path for a in client.list_artifacts(result.study_run_id)}
    assert {"comparison.csv", "comparison.txt", "auc_mean_by_method.png"} <= artifacts
    stages = client.search_runs([client.get_experiment_by_name("seg-guided-test").experiment_id],
                                "attributes.run_name = 'pretrain'")
    logged = stages[0].data.metrics
    assert 0.0 <= logged["train/seg_mask_dice"] <= 1.0 and logged["train/seg_mask_std"] >= 0
    assert "train/loss_consistency" in logged and "probe/auc_mean" in logged

"""One contrastive method through Ray Train: seg_crop (lung crops in both stages, the
segmentation-guided views) pretrains with run_pretraining, with the per-epoch convergence probe
on, and fine-tunes multi-label on the phantom findings with run_finetuning (tiny: 32 px, 64
images, 2 + 1 epochs)."""

from __future__ import annotations

import mlflow
import pytest
import torch

from medmask.models import create_model
from medmask.preprocess import study_splits
from medmask.tracking import Tracker
from medmask.train import (
    MimSettings,
    load_checkpoint,
    pretraining_summary,
    run_finetuning,
    run_pretraining,
    settings_from_dict,
)
from medmask.train._trainer import ScalingSettings

FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


@pytest.mark.e2e
def test_seg_crop_pretrains_and_fine_tunes_on_ray_train(ray_session, tmp_path, mlflow_uri):
    optim = {"base_lr": 1e-2, "weight_decay": 0.0, "warmup_epochs": 0}
    settings = settings_from_dict(MimSettings, {
        "study": "ssl", "seed": 0, "method": "seg_crop",
        "method_params": {"temperature": 0.1},
        "crop": {"padding": 20, "min_crop_ratio": 0.5},
        "data": {"name": "phantom", "size": 32, "chunk": 32, "n_train": 64, "n_val": 32,
                 "n_test": 32},
        "masking": {"name": "random", "ratio": 0.0, "params": {}},
        "model": {"name": "contrastive_cnn_tiny", "params": {}},
        "pretrain": {"epochs": 2, "batch_size": 32, "mixed_precision": False, "optim": optim},
        "finetune": {"epochs": 1, "batch_size": 32, "mixed_precision": False, "optim": optim},
        "head": {"num_classes": 5, "multilabel": True, "class_names": FINDINGS},
        "cache_dir": str(tmp_path / "cache"), "storage_dir": str(tmp_path / "ray"),
        "probe": {"every": 1, "images": 64},
    })
    scaling = ScalingSettings(num_workers=1, max_failures=0)
    datasets = {k: v.materialize() for k, v in study_splits(settings.data, 0).items()}
    tracker = Tracker(mlflow_uri, "ssl-test")
    with tracker.study("ssl", tags={}) as study, \
            tracker.stage("pretrain", parent=study, tags={}) as stage:
        checkpoint = run_pretraining(settings.pretraining(), datasets, stage, scaling)
        pretrain_run = stage.run_id
    state = load_checkpoint(checkpoint)
    assert state["model_name"] == "contrastive_cnn_tiny" and state["epoch"] == 1
    fresh = create_model("contrastive_cnn_tiny").state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in state["model"].items())
    with tracker.stage("finetune", parent=study, tags={}) as stage:
        metrics = run_finetuning(settings.finetuning(), datasets, stage, scaling, checkpoint, 1.0,
                                 "full")
        finetune_run = stage.run_id
    assert metrics["num_samples"] == 32
    assert 0.0 <= metrics["auc_mean"] <= 1.0
    client = mlflow.tracking.MlflowClient(mlflow_uri)
    logged = client.get_run(pretrain_run).data.metrics
    assert logged["data/crop_fallbacks_train"] == 0.0  # phantom lungs are always found
    assert "train/loss" in logged and logged["perf/peak_rss_mb"] > 0
    history = client.get_metric_history(pretrain_run, "probe/auc_mean")
    assert [m.step for m in history] == [0, 1]  # probed every epoch
    assert all(0.0 <= m.value <= 1.0 for m in history)
    summary = pretraining_summary(checkpoint)
    assert summary["convergence_epoch"] in (0.0, 1.0)
    assert summary["probe_auc_best"] == max(m.value for m in history)
    assert logged["data/crop_fallbacks_probe_fit"] == 0.0  # the probe sees lung crops too
    assert "data/crop_fallbacks_test" in client.get_run(finetune_run).data.metrics

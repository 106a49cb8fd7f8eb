"""experiments/contrastive.py on NIH ChestX-ray14's layout: the experiment's own code path
(Hydra config -> typed settings -> run_mim_study on local Ray -> MLflow) on a tiny fixture in
the dataset's published layout, with option 1 (which reads the rule-based Otsu lungs: NIH ships
no organ maps), a tiny CNN, 1 + 1 epochs: 14 labels, per-label and mean AUC, labels without a
positive (or without a negative) in the test split NaN, counted and left out of the mean."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from medmask import columns as C
from medmask.data.manifest import load_manifest
from medmask.data.nih_cxr14 import NIH_FINDINGS
from medmask.data.phantom import generate
from tests.data.fixtures import nih_rows, write_nih_cxr14

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import _mim  # noqa: E402


def nih_fixture(root: Path) -> Path:
    """The NIH layout (CSV, official lists, images_0NN/images/) with phantom chest images, so
    that Otsu finds lungs; 16 patients x 2 images, 3 test patients."""
    rows = nih_rows(n_patients=16, per_patient=2)
    write_nih_cxr14(root, rows, test_patients=3)
    images = generate(len(rows), 64, seed=0)[C.IMAGE]
    for row, image in zip(rows, images, strict=True):
        path = next(root.glob(f"images_*/images/{row[0]}"))
        assert cv2.imwrite(str(path), np.clip(image * 255, 0, 255).astype(np.uint8))
    return root


def expected_nan_labels(root: Path) -> int:
    """Labels whose AUC is undefined on the test split: no positive or no negative there."""
    test = load_manifest("nih_cxr14", root, seed=0)
    test = test.loc[test[C.SPLIT] == "test", list(NIH_FINDINGS)].to_numpy()
    positives = test.sum(0)
    return int(((positives == 0) | (positives == len(test))).sum())


@pytest.mark.slow  # two TorchTrainer fits (pretraining, fine-tuning): 1-3 min on 2 CPUs
@pytest.mark.e2e
def test_contrastive_experiment_runs_on_nih_layout(ray_session, tmp_path, mlflow_uri):
    root = nih_fixture(tmp_path / "CXR8")
    overrides = [
        "data=nih_cxr14", f"data.root={root}", "data.size=32", "data.val_fraction=0.2",
        "head=nih14", "method=masked_contrastive", "model.params.proj_dim=16",
        "train.pretrain.epochs=1", "train.pretrain.batch_size=8",
        "train.pretrain.mixed_precision=false", "train.finetune.epochs=1",
        "train.finetune.batch_size=8", "train.finetune.mixed_precision=false",
        "train.recipe.min_steps=0", "modes=[linear_probe]", "fractions=[1.0]",
        "baselines.from_scratch=false", "controls.shortcut=false", "probe.every=1",
        f"tracking.uri={mlflow_uri}", "tracking.experiment=nih-test",
        f"cache_dir={tmp_path / 'cache'}", f"storage_dir={tmp_path / 'ray'}",
    ]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("contrastive", overrides=overrides)
    assert _mim.mim_settings(cfg).head.class_names == NIH_FINDINGS
    table = _mim.run(cfg)
    assert table["method"].tolist() == ["masked_contrastive"]

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("nih-test").experiment_id
    finetune = [r for r in client.search_runs([experiment])
                if "test/auc_nan_count" in r.data.metrics]
    assert len(finetune) == 1
    logged = finetune[0].data.metrics
    # NaN metrics are not logged to MLflow but named in the run's nonfinite_metrics tag
    per_label = np.array([logged.get(f"test/auc/{name}", np.nan) for name in NIH_FINDINGS])
    nonfinite = finetune[0].data.tags.get("nonfinite_metrics", "")
    assert all(f"test/auc/{name}" in nonfinite
               for name, auc in zip(NIH_FINDINGS, per_label, strict=True) if np.isnan(auc))
    nan_labels = expected_nan_labels(root)
    assert 0 < nan_labels < len(NIH_FINDINGS)  # the fixture has both kinds of label
    assert np.isnan(per_label).sum() == logged["test/auc_nan_count"] == nan_labels
    assert logged["test/auc_mean"] == pytest.approx(np.nanmean(per_label))
    assert float(table["auc_mean"].iloc[0]) == pytest.approx(np.nanmean(per_label))
    pretrain = [r for r in client.search_runs([experiment])
                if "probe/auc_nan_count" in r.data.metrics]
    assert pretrain and 0.0 <= pretrain[0].data.metrics["train/loss"] < 100  # option 1 trained

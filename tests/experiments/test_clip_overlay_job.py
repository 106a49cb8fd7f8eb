"""experiments/clip_overlay.py: the quick default composes into valid settings, and a tiny
run (a phantom CLIP of one epoch, a handful of phantoms) fills Table 2's 10 cells and logs
the grid as CSV and a heatmap PNG on the MLflow study run (in-process, no Ray)."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir

from medmask.eval import OverlaySettings
from medmask.train import HeadFitSettings, PhantomClipSettings

ROOT = Path(__file__).resolve().parents[2]
CLIP = {"n_images": 32, "image_size": 32, "width": 32, "layers": 1, "embed_dim": 16,
        "epochs": 1, "batch_size": 16, "threads": 1}
FIT = {"lp_epochs": 2, "jft_epochs": 1, "batch_size": 8, "threads": 1}
TINY = ["data.size=32", "data.n_train=32", "data.n_test=16", "clip_overlay.seeds=[0,1]",
        "clip_overlay.cohort.val_fraction=0.25", "clip_overlay.fit.select=binary",
        "eval.params.bootstrap=50",
        *(f"++clip_overlay.phantom_clip.{k}={v}" for k, v in CLIP.items()),
        *(f"++clip_overlay.fit.{k}={v}" for k, v in FIT.items())]


def _cfg(overrides: list[str]):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("clip_overlay", overrides=overrides)


def test_quick_default_composes_into_valid_settings():
    cfg = _cfg([])
    settings = OverlaySettings.from_params(**cfg.eval.params)
    assert settings.alpha == 1.0 and settings.thickness == 2 and settings.statistics == "imagenet"
    assert settings.findings == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                                 "Pleural Effusion")
    assert PhantomClipSettings(**cfg.clip_overlay.phantom_clip).image_size == cfg.data.size
    HeadFitSettings(**cfg.clip_overlay.fit)
    assert list(cfg.clip_overlay.seeds) == [0, 1, 2] and cfg.clip_overlay.clip_folder is None


def test_a_tiny_run_fills_the_grid_and_logs_it(tmp_path, mlflow_uri):
    sys.path.insert(0, str(ROOT / "experiments"))
    import clip_overlay

    uri = mlflow_uri  # a fresh store, schema ready
    result = clip_overlay.run(_cfg([*TINY, f"tracking.uri={uri}",
                                    f"cache_dir={tmp_path / 'cache'}"]))
    assert len(result.grid) == 10 and len(result.layout()) == 5
    mlflow.set_tracking_uri(uri)
    run = mlflow.search_runs(experiment_names=["medmask"], output_format="list")[0]
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"clip_overlay_table2.csv", "clip_overlay_grid.csv", "clip_overlay_grid.png",
            "clip_overlay_gains.csv", "clip_overlay_baselines.csv",
            "clip_overlay_selection.csv"} <= names
    assert "clip_overlay/jft/overlay/overlay/binary" in run.data.metrics
    assert run.data.tags["protocol"] == "clip_overlay"


def test_non_phantom_data_and_bad_settings_fail_before_compute():
    sys.path.insert(0, str(ROOT / "experiments"))
    import clip_overlay

    with pytest.raises(ValueError, match="needs chexmask_root"):
        clip_overlay.data_settings(_cfg(["data=mimic_cxr", "data.root=/nowhere"]))
    with pytest.raises(ValueError, match="reads data=phantom or data=mimic_cxr"):
        clip_overlay.data_settings(_cfg(["data=nih_cxr14", "data.root=/nowhere"]))
    with pytest.raises(ValueError, match="clip_overlay.cohort.views"):
        clip_overlay.data_settings(_cfg(["data=mimic_cxr", "data.root=/x", "chexmask.root=/y",
                                         "data.uncertain=ones"]))
    with pytest.raises(ValueError, match="reading must be one of"):
        clip_overlay.run(_cfg(["eval.params.reading=auc"]))


def test_mimic_cxr_with_chexmask_runs_the_grid_through_the_experiment(tmp_path, mlflow_uri):
    """data=mimic_cxr data.root=... chexmask.root=...: a tiny cohort in the published
    MIMIC-CXR-JPG and CheXmask layouts goes through the experiment's own code path (the
    phantom CLIP of one epoch; decoded bicubic at data.size)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import clip_overlay

    from tests.data.fixtures import write_mimic_cohort

    write_mimic_cohort(tmp_path / "mimic", tmp_path / "chexmask", n_patients=16)
    tiny = [t for t in TINY if not t.startswith("data.")]
    cfg = _cfg([*tiny, "data=mimic_cxr", f"data.root={tmp_path / 'mimic'}", "data.size=32",
                f"chexmask.root={tmp_path / 'chexmask'}", "clip_overlay.seeds=[0]",
                f"tracking.uri={mlflow_uri}", f"cache_dir={tmp_path / 'cache'}"])
    result = clip_overlay.run(cfg)
    assert len(result.grid) == 10 and result.images > 0
    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.search_runs(experiment_names=["medmask"], output_format="list")[0]
    assert run.data.tags["dataset"] == "mimic_cxr"
    assert run.data.metrics["data/rows/test"] == result.images
    assert run.data.metrics["data/mimic_dropped/other_view"] == 32  # the laterals
    assert "data/labels/Edema/uncertain" in run.data.metrics

"""experiments/grounding.py: the config composes and a given checkpoint is scored end to end
(in-process: no Ray, since a checkpoint needs no training) with its tables on MLflow."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir

from medmask.eval import GroundingSettings
from medmask.train import FitSettings, PhantomData, fitted_classifier

ROOT = Path(__file__).resolve().parents[2]


def _cfg(overrides: list[str]):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("grounding", overrides=overrides)


def test_quick_default_composes_into_valid_settings():
    sys.path.insert(0, str(ROOT / "experiments"))
    from _mim import mim_settings

    cfg = _cfg([])
    settings = GroundingSettings.from_params(**cfg.eval.params)
    assert settings.ratios == (0.1, 0.2, 0.3, 0.4) and len(settings.seeds) == 4
    assert settings.bootstrap == 2000 and settings.anatomy == "organs"
    assert mim_settings(cfg).masking.name == "random" and cfg.data.size == 64
    assert cfg.grounding.checkpoint is None and cfg.grounding.controls


def test_a_given_checkpoint_is_scored_and_logged(tmp_path, mlflow_uri):
    sys.path.insert(0, str(ROOT / "experiments"))
    import grounding

    data = PhantomData(size=32, n_train=16, n_test=8)
    fitted = fitted_classifier(data, FitSettings(epochs=1, batch_size=8), tmp_path / "cache")
    uri = mlflow_uri  # a fresh store, schema ready
    cfg = _cfg([f"grounding.checkpoint={fitted.path}", "data.size=32", "data.n_test=8",
                "eval.params.bootstrap=50", f"tracking.uri={uri}"])
    scores = grounding.run(cfg)
    assert list(scores["classifier"]) == ["checkpoint"] and scores["images"].tolist() == [8]
    assert scores["qualifying_ratios"].tolist() == ["0.1 0.2 0.3 0.4"]
    mlflow.set_tracking_uri(uri)
    run = mlflow.search_runs(experiment_names=["medmask"], output_format="list")[0]
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"grounding_scores.csv", "grounding_drops.csv", "checkpoint"} <= names
    figures = mlflow.MlflowClient().list_artifacts(run.info.run_id, "checkpoint")
    assert "checkpoint/drops_vs_area.png" in {a.path for a in figures}
    assert "grounding/checkpoint/score" in run.data.metrics


def test_non_phantom_data_and_bad_settings_fail_before_compute():
    sys.path.insert(0, str(ROOT / "experiments"))
    import grounding

    with pytest.raises(ValueError, match="scores phantoms"):
        grounding.phantom_data(_cfg(["data=eyegaze"]))
    with pytest.raises(ValueError, match="at least 4 distinct rectangle seeds"):
        grounding.run(_cfg(["eval.params.seeds=[0,1]"]))


def test_a_classifier_is_loaded_from_an_mlflow_run(tmp_path, mlflow_uri):
    sys.path.insert(0, str(ROOT / "experiments"))
    import grounding

    from medmask.tracking import Tracker

    data = PhantomData(size=32, n_train=16, n_test=8)
    fitted = fitted_classifier(data, FitSettings(epochs=1, batch_size=8), tmp_path / "cache")
    uri = mlflow_uri  # a fresh store, schema ready
    tracker = Tracker(uri, "medmask")
    with tracker.study("earlier") as earlier:
        earlier.log_artifact(fitted.path / "checkpoint.pt", "mae-random/classifier")
    with tracker.study("empty") as empty:
        empty.log_dict({"nothing": 1}, "summary.json")
    common = ["data.size=32", "data.n_test=8", "eval.params.bootstrap=50", f"tracking.uri={uri}",
              f"cache_dir={tmp_path / 'cache'}"]
    by_run = grounding.run(_cfg([f"grounding.run_id={earlier.run_id}", *common]))
    by_path = grounding.run(_cfg([f"grounding.checkpoint=mlflow:{earlier.run_id}/mae-random/"
                                  "classifier", *common]))
    local = grounding.run(_cfg([f"grounding.checkpoint={fitted.path}", *common]))
    assert by_run["score"].tolist() == by_path["score"].tolist() == local["score"].tolist()
    with pytest.raises(ValueError, match="no MLflow run 'f00'"):
        grounding.run(_cfg(["grounding.run_id=f00", *common]))
    with pytest.raises(ValueError, match="exactly one 'checkpoint.pt' artifact.*found none"):
        grounding.run(_cfg([f"grounding.checkpoint=mlflow:{empty.run_id}", *common]))
    with pytest.raises(ValueError, match="not both"):
        grounding.run(_cfg([f"grounding.run_id={earlier.run_id}",
                            f"grounding.checkpoint={fitted.path}", *common]))

"""sweep=clip_overlay: Table 2 as one Tune study through the run tree, on the real local Ray
and a real MLflow store (tiny: a one-epoch phantom CLIP trained in the driver, 48 phantoms,
one seed, LP 2 epochs / JFT 1 epoch): the study run holds Table 2's layout and the grid
plot, and every grid cell is exactly what its trial measured; the config composes."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from medmask.data.findings import FindingsDataSettings
from medmask.eval import OverlaySettings
from medmask.tracking import KIND_TAG, PARENT_TAG, Tracker
from medmask.train import HeadFitSettings, PhantomClipSettings
from medmask.tune import ClipSweepSettings, cell_points, run_clip_overlay_sweep

ROOT = Path(__file__).resolve().parents[2]
TINY_CLIP = PhantomClipSettings(n_images=32, image_size=32, patch_size=8, width=32, layers=1,
                                embed_dim=16, epochs=1, batch_size=16, threads=1)


def test_the_cells_are_the_trials():
    points = cell_points([0, 1, 2])
    assert len(points) == 13 and points[0]["method"] == "zero_shot"
    assert {(p["method"], p["train"]) for p in points[1:]} == {
        ("lp", "original"), ("lp", "overlay"), ("jft", "original"), ("jft", "overlay")}


def test_sweep_config_composes_into_the_experiments_settings():
    sys.path.insert(0, str(ROOT / "experiments"))
    import sweep

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("sweep", overrides=["sweep=clip_overlay"])
    settings = sweep.clip_sweep_settings(cfg)
    assert settings.name == "clip_overlay" and settings.seeds == (0, 1, 2)
    assert settings.data.name == "phantom" and settings.data.variant == "benchmark"
    assert settings.data.size == settings.phantom_clip.image_size == 64
    assert settings.fit.select == "auc" and settings.overlay.alpha == 1.0


@pytest.mark.slow
@pytest.mark.e2e
def test_the_sweep_logs_table_2_from_its_trials(tmp_path, ray_session, mlflow_uri,
                                                monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative cache, as the quick default's: trials run elsewhere
    settings = ClipSweepSettings(
        name="clip-test", overlay=OverlaySettings(bootstrap=50),
        fit=HeadFitSettings(lp_epochs=2, jft_epochs=1, batch_size=8, select="binary",
                            threads=1),
        data=FindingsDataSettings(size=32, n_train=32, n_test=16, val_fraction=0.25),
        seeds=(0,), phantom_clip=TINY_CLIP, cache_dir="cache",
        max_concurrent_trials=2)
    tracker = Tracker(mlflow_uri, "clip-sweep")
    out = run_clip_overlay_sweep(settings, tracker, storage_dir=tmp_path / "sweeps")
    assert len(out.trials) == 5 and len(out.result.grid) == 10
    assert len(out.selections) == 4 and set(out.selections["epoch"]) <= {1, 2}
    grid = out.result.grid
    for _, trial in out.trials.iterrows():  # each cell is what its trial measured
        train = "none" if pd.isna(trial["train"]) else trial["train"]
        for test in ("original", "overlay"):
            row = grid[(grid["method"] == trial["method"]) & (grid["test"] == test)
                       & (grid["train"].fillna("none") == train)]
            assert len(row) == 1
            for reading in ("binary", "exact", "top1"):
                assert row[f"{reading}_mean"].iloc[0] == pytest.approx(
                    trial[f"test/{test}/{reading}"])
    client = MlflowClient(mlflow_uri)
    names = {a.path for a in client.list_artifacts(out.study_run_id)}
    assert {"clip_overlay_table2.csv", "clip_overlay_grid.png", "clip_overlay_trials.csv",
            "clip_overlay_selection.csv", "clip_overlay_gains.csv"} <= names
    table = pd.read_csv(out.path / "clip_overlay_table2.csv")
    assert len(table) == 5 and (table.fillna("") != "").all().all()
    experiment = client.get_experiment_by_name("clip-sweep").experiment_id
    runs = client.search_runs([experiment])
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == out.study_run_id]
    kinds = sorted(r.data.tags.get(KIND_TAG) for r in children)
    assert kinds == ["stage"] + ["trial"] * 5  # the phantom CLIP's stage and the 5 trials
    assert all(r.info.status == "FINISHED" for r in runs)

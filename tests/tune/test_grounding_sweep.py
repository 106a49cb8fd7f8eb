"""sweep=grounding end to end on Ray (tiny: one strategy x 2 seeds, 1 pretraining epoch of the
tiny ViT, 1 in-process fine-tuning epoch, 16 test phantoms): every trial reports its grounding
score, and the per-strategy table on the study run averages exactly those scores over seeds,
with an interval around the mean (several strategies: tests/tune/test_summary.py)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from medmask.tracking import Tracker
from medmask.tune import Concurrency, SweepSpec, run_sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import STRATEGIES, tiny_settings  # noqa: E402


@pytest.mark.study  # a whole Tune study: run by hand (make test-studies), not in make test
@pytest.mark.slow
@pytest.mark.e2e
def test_grounding_sweep_tables_each_strategys_score_over_seeds(tmp_path, ray_session,
                                                                 mlflow_uri):
    base = tiny_settings(tmp_path)
    base = dataclasses.replace(base, data={**base.data, "variant": "classic", "n_test": 16})
    spec = SweepSpec(name="grounding-test", space={"strategy": ["rgmim"], "seed": [0, 1]},
                     strategies=STRATEGIES, metric="grounding_score", trial="grounding",
                     grounding={"finetune": {"epochs": 1, "batch_size": 32},
                                "eval": {"bootstrap": 50}})
    tracker = Tracker(mlflow_uri, "grounding-sweep")
    result = run_sweep(base, spec, tracker, storage_dir=tmp_path / "sweeps",
                       concurrency=Concurrency(1), log_checkpoints=False)
    trials = result.trials
    assert len(trials) == 2
    assert {"grounding_score", "grounding_ci_low", "classifier_accuracy"} <= set(trials.columns)
    assert "grounding_image_differences" not in pd.read_csv(result.path / "trials.csv").columns
    table = pd.read_csv(result.path / "grounding_by_strategy.csv")
    assert table["strategy"].tolist() == ["rgmim"]
    for row in table.itertuples():
        scores = trials[trials["strategy"] == row.strategy].sort_values("seed")[
            "grounding_score"].to_numpy()
        if row.seeds == 2:
            assert row.score == pytest.approx(scores.mean())
            assert [float(v) for v in row.per_seed.split()] == pytest.approx(scores, abs=5e-4)
            assert row.ci_low <= row.score <= row.ci_high
        else:
            assert row.seeds + row.seeds_without_score == 2
    client = MlflowClient(mlflow_uri)
    names = {a.path for a in client.list_artifacts(result.study_run_id)}
    assert {"grounding_by_strategy.csv", "grounding_by_strategy.png", "trials.csv"} <= names
    metrics = client.get_run(result.study_run_id).data.metrics
    assert not [k for k in metrics if k.startswith("summary/")]  # one name across trial runs

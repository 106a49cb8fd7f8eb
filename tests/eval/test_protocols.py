"""The evaluation-protocol registry and its first protocol, ``masked_area``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from medmask.data.phantom import generate
from medmask.eval import list_protocols, protocol_needs, run_protocol

ROOT = Path(__file__).resolve().parents[2]


def _batches(n: int = 8, size: int = 64) -> list[dict]:
    rows = generate(n, size, seed=1)
    return [{k: torch.from_numpy(np.asarray(rows[k])) for k in ("image", "gaze", "organs")}]


def test_masked_area_reports_what_each_condition_achieved():
    table = run_protocol("masked_area", _batches(), ratios=[0.1, 0.3], seeds=[0, 1])
    assert list(table["masker"]) == ["anatomical"] * 2 + ["non_anatomical"] * 2
    anatomical = table[table["masker"] == "anatomical"]
    np.testing.assert_allclose(anatomical["achieved_mean"], [0.1, 0.3], atol=0.01)
    assert (anatomical["short_images"] == 0).all() and (table["draws"] == 16).all()
    outside = table[table["masker"] == "non_anatomical"]
    assert (outside["achieved_mean"] <= outside["ratio"] + 1e-9).all()


def test_unknown_protocols_and_missing_columns_are_named():
    assert "masked_area" in list_protocols()
    assert set(protocol_needs("masked_area")) == {"gaze", "organs"}
    with pytest.raises(ValueError, match="unknown evaluation protocol 'grounding2'"):
        run_protocol("grounding2", [])
    batch = _batches()[0]
    del batch["gaze"]
    with pytest.raises(ValueError, match=r"needs columns \['gaze'\]"):
        run_protocol("masked_area", [batch], maskers=["anatomical"])


def test_evaluate_entry_point_logs_the_table(ray_session, mlflow_uri):
    sys.path.insert(0, str(ROOT / "experiments"))
    import evaluate

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["data.n=16", "data.size=64", "data.chunk=16",
                                             f"tracking.uri={mlflow_uri}",
                                             "eval.params.ratios=[0.2]"])
    table = evaluate.run(cfg)
    assert len(table) == 2 and set(table["ratio"]) == {0.2}

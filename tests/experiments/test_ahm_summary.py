"""experiments/ahm.py's printed summaries: the diagnostics and the mean/spread over seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import ahm as ahm_experiment  # noqa: E402


def test_seed_summary_gives_mean_and_spread_per_method_and_fraction() -> None:
    tables = [pd.DataFrame({"method": ["ahm", "random"], "fraction": [1.0, 1.0],
                            "dice": [0.5 + d, 0.4]}) for d in (0.0, 0.1, 0.2)]
    checks = [{"captured_share_p0": v, "spearman_v_oracle": 0.8} for v in (0.5, 0.6, 0.7)]
    dice, text = ahm_experiment.seed_summary(tables, checks)
    ahm = dice[dice["method"] == "ahm"].iloc[0]
    assert ahm["mean"] == pytest.approx(0.6) and ahm["std"] == pytest.approx(0.1)
    assert ahm["count"] == 3
    assert "over 3 seeds" in text and "captured_share_p0" in text and "0.6000 +- 0.1000" in text


def test_policy_summary_reads_the_diagnostics() -> None:
    check = {"test/random_mask_loss": 0.02, "test/oracle_mask_loss": 0.04,
             "captured_share_p0": 0.75, "captured_share_p0_ci_low": 0.7,
             "captured_share_p0_ci_high": 0.8, "policy_p0_beats_position_oracle": 1.0,
             "spearman_v_oracle": 0.85, "compactness/policy_p0": 3.1, "compactness/random": 2.6,
             "compactness/oracle": 3.0}
    text = ahm_experiment.policy_summary(check)
    assert "random" in text and "0.750 [0.700, 0.800]" in text and "True" in text
    assert "rarely masked: n/a" in text and "nan" not in text.lower()

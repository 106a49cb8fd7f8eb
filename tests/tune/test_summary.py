"""The end-of-sweep summary: mean and spread over seeds, the text table and the plot."""

import numpy as np
import pandas as pd
import pytest

from medmask.tune import metric_plot, pivot_text, summary_table


def _trials() -> pd.DataFrame:
    rows = []
    for strategy, offset in (("random", 0.0), ("rgmim", 0.1)):
        for ratio in (0.3, 0.6):
            for seed in (0, 1):
                rows.append({"strategy": strategy, "ratio": ratio, "seed": seed,
                             "accuracy": 0.5 + offset + 0.1 * seed, "auc_mean": 0.7})
    return pd.DataFrame(rows)


def test_summary_is_mean_and_std_over_seeds():
    summary = summary_table(_trials(), "strategy", "ratio", ["accuracy", "auc_mean"])
    assert list(summary.columns) == ["strategy", "ratio", "accuracy_mean", "accuracy_std",
                                     "auc_mean_mean", "auc_mean_std", "n"]
    row = summary[(summary.strategy == "rgmim") & (summary.ratio == 0.6)].iloc[0]
    assert row.accuracy_mean == pytest.approx(0.65)
    assert row.accuracy_std == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert row.n == 2
    text = pivot_text(summary, "strategy", "ratio", "accuracy")
    assert "ratio=0.3" in text and "0.650 ± 0.071" in text
    with pytest.raises(ValueError, match="not in the trial table"):
        summary_table(_trials(), "strategy", "fraction", ["accuracy"])


def test_plot_has_one_line_per_strategy(tmp_path):
    summary = summary_table(_trials(), "strategy", "ratio", ["accuracy"])
    figure = metric_plot(summary, "strategy", "ratio", "accuracy", title="t")
    axis = figure.axes[0]
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["random", "rgmim"]
    assert axis.get_xlabel() == "ratio"
    figure.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_grounding_by_strategy_averages_the_seeds_and_counts_unscored_ones():
    from medmask.tune._summary import grounding_by_strategy

    trials = pd.DataFrame({
        "strategy": ["random", "random", "rgmim", "rgmim"], "seed": [1, 0, 0, 1],
        "units": [[0.2, 0.4], [0.0, 0.1, 0.2], [-0.1, -0.3], []]})
    table = grounding_by_strategy(trials, "strategy", "units", resamples=200)
    random_row, rgmim_row = table.to_dict("records")
    assert random_row["score"] == pytest.approx((0.1 + 0.3) / 2)  # seed 0 first, then seed 1
    assert random_row["per_seed"] == "+0.100 +0.300" and random_row["seeds"] == 2
    assert random_row["ci_low"] <= random_row["score"] <= random_row["ci_high"]
    assert rgmim_row["score"] == pytest.approx(-0.2) and rgmim_row["seeds_without_score"] == 1
    assert np.isnan(rgmim_row["seed_sd"])

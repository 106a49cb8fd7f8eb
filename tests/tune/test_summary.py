"""The end-of-sweep summary: mean and spread over seeds, the text table and the plot."""

import numpy as np
import pandas as pd
import pytest

from medmask.tune import metric_plot, pivot_text, summary_table
from medmask.tune._summary import comparison_bars, comparison_table, comparison_text


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


def _method_trials() -> pd.DataFrame:
    """simclr: AUC 0.6 / 0.7 (seeds 0, 1), step 1.0 s, 1000 MB; seg_attention: +0.1, 1.3 s,
    1100 MB; linear_probe and full modes (full = +0.05)."""
    rows = []
    for method, offset, step, rss in (("simclr", 0.0, 1.0, 1000.0),
                                      ("seg_attention", 0.1, 1.3, 1100.0)):
        for mode, extra in (("linear_probe", 0.0), ("full", 0.05)):
            for seed in (0, 1):
                rows.append({"method": method, "mode": mode, "seed": seed,
                             "auc_mean": 0.6 + offset + extra + 0.1 * seed, "step_s": step,
                             "peak_rss_mb": rss, "convergence_epoch": 2.0 + seed})
    return pd.DataFrame(rows)


def test_the_comparison_has_gains_and_costs_against_the_baseline():
    table = comparison_table(_method_trials(), "method", "mode", "auc_mean", "simclr")
    row = table.set_index("method").loc["seg_attention"]
    assert row["auc_mean linear_probe"] == pytest.approx(0.75)
    assert row["auc_mean linear_probe std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert row["gain linear_probe"] == pytest.approx(0.1) and row["gain full"] == pytest.approx(0.1)
    assert row["step_s vs simclr %"] == pytest.approx(30.0)
    assert row["peak_rss_mb vs simclr %"] == pytest.approx(10.0)
    assert row["convergence_epoch"] == pytest.approx(2.5) and row["seeds full"] == 2
    assert table.set_index("method").loc["simclr", "gain full"] == 0.0
    assert comparison_text(table, "method", smoke=True).startswith("SMOKE RUN")
    with pytest.raises(ValueError, match="baseline 'byol'"):
        comparison_table(_method_trials(), "method", "mode", "auc_mean", "byol")


def test_the_bar_plot_has_one_bar_per_method_and_mode(tmp_path):
    summary = summary_table(_method_trials(), "method", "mode", ["auc_mean"])
    figure = comparison_bars(summary, "method", "mode", "auc_mean", title="smoke")
    axis = figure.axes[0]
    assert len(axis.patches) == 4
    assert [t.get_text() for t in axis.get_yticklabels()] == ["seg_attention", "simclr"]
    figure.savefig(tmp_path / "bars.png")


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


def test_grounding_by_strategy_pairs_each_strategy_with_the_baseline_per_seed_and_image():
    from medmask.tune._summary import grounding_by_strategy

    trials = pd.DataFrame({
        "strategy": ["random", "random", "ahm", "ahm", "rgmim"], "seed": [0, 1, 1, 0, 0],
        "units": [[0.0, 0.2], [0.1, 0.1], [0.4, 0.2], [0.3, 0.1], [0.1, 0.2, 0.3]]})
    table = grounding_by_strategy(trials, "strategy", "units", resamples=200,
                                  baseline="random").set_index("strategy")
    # ahm - random: seed 0 (0.2 - 0.1), seed 1 (0.3 - 0.1), paired on the same seed
    assert table.loc["ahm", "diff_vs_random"] == pytest.approx((0.1 + 0.2) / 2)
    assert table.loc["ahm", "diff_ci_low"] <= 0.15 <= table.loc["ahm", "diff_ci_high"]
    assert np.isnan(table.loc["random", "diff_vs_random"])
    assert np.isnan(table.loc["rgmim", "diff_vs_random"])  # its images do not pair up
    assert "diff_vs_random" not in grounding_by_strategy(trials, "strategy", "units",
                                                         resamples=50).columns

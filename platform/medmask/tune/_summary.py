"""The end of a sweep: a summary table (mean and spread over seeds) and a metric-vs-x plot.

RGMIM Table 3 (accuracy per strategy x masking ratio) and AHM Fig. 6 (metric vs masking ratio,
one line per method) are the shapes: :func:`summary_table` groups the trial table by
``[group, x]`` and aggregates over seeds; :func:`metric_plot` draws one line per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medmask.eval import paired_bootstrap


def summary_table(trials: pd.DataFrame, group: str, x: str,
                  metrics: Sequence[str]) -> pd.DataFrame:
    """``group x x -> {metric}_mean, {metric}_std, n`` over the trials (seeds).

    The spread is the sample standard deviation (NaN with a single seed).

    Raises:
        ValueError: when ``group``, ``x`` or a metric is not a column of ``trials``.
    """
    missing = [c for c in (group, x, *metrics) if c not in trials.columns]
    if missing:
        raise ValueError(f"summary columns {missing} are not in the trial table; columns: "
                         f"{sorted(trials.columns)}")
    grouped = trials.groupby([group, x], sort=True)
    summary = grouped[list(metrics)].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["n"] = grouped.size()
    return summary.reset_index()


def pivot_text(summary: pd.DataFrame, group: str, x: str, metric: str) -> str:
    """The summary as a ``group x x`` text table of ``mean ± std`` cells."""
    cells = summary.assign(cell=[
        f"{m:.3f}" if np.isnan(s) else f"{m:.3f} ± {s:.3f}"
        for m, s in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"], strict=True)
    ])
    table = cells.pivot(index=group, columns=x, values="cell").fillna("-")
    table.columns = [f"{x}={c:g}" if isinstance(c, int | float) else f"{x}={c}"
                     for c in table.columns]
    return f"{metric} (mean ± std over seeds)\n{table.to_string()}"


def metric_plot(summary: pd.DataFrame, group: str, x: str, metric: str, title: str = "") -> Any:
    """A matplotlib figure: ``metric`` vs ``x``, one line (with std error bars) per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for name, rows in summary.groupby(group, sort=True):
        rows = rows.sort_values(x)
        errors = rows[f"{metric}_std"].fillna(0.0)
        axis.errorbar(rows[x], rows[f"{metric}_mean"], yerr=errors, marker="o", capsize=3,
                      label=str(name))
    axis.set_xlabel(x)
    axis.set_ylabel(f"test {metric}")
    axis.set_title(title or f"{metric} vs {x}")
    axis.grid(alpha=0.3)
    axis.legend(title=group)
    figure.tight_layout()
    return figure


def grounding_by_strategy(trials: pd.DataFrame, group: str, units: str,
                          resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per ``group`` value: the grounding score's mean over seeds with a 95% bootstrap
    interval (:func:`medmask.eval.paired_bootstrap` against 0: the images of every seed
    resampled), each seed's score, and the seeds. ``units``: the column holding each trial's
    per-image differences (drop_match - drop_non over the qualifying r); trials where no r
    qualified (no units) are counted apart."""
    rows = []
    for name, block in trials.groupby(group, sort=True):
        block = block.sort_values("seed")
        arrays = [np.asarray(v, np.float64) for v in block[units]]
        kept = [a for a in arrays if len(a)]
        row: dict[str, Any] = {group: name, "seeds": len(kept),
                               "seeds_without_score": len(arrays) - len(kept)}
        if kept:
            interval = paired_bootstrap(kept, [np.zeros_like(a) for a in kept],
                                        resamples=resamples, seed=seed)
            row |= {"score": interval.difference, "ci_low": interval.low,
                    "ci_high": interval.high,
                    "seed_sd": float(np.std(interval.per_seed, ddof=1)) if len(kept) > 1
                    else float("nan"),
                    "per_seed": " ".join(f"{v:+.3f}" for v in interval.per_seed)}
        else:
            row |= {"score": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                    "seed_sd": float("nan"), "per_seed": ""}
        rows.append(row)
    return pd.DataFrame(rows)


def grounding_plot(table: pd.DataFrame, group: str, title: str = "") -> Any:
    """The grounding score per ``group`` value with its interval (a bar per value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6), dpi=100)
    scores = table["score"].to_numpy(float)
    errors = np.stack([scores - table["ci_low"].to_numpy(float),
                       table["ci_high"].to_numpy(float) - scores])
    axis.bar(table[group].astype(str), scores, yerr=errors, capsize=4, color="tab:blue")
    axis.axhline(0.0, color="gray", lw=0.8)
    axis.set_ylabel("grounding score (matched anatomical - non-anatomical drop)")
    axis.set_xlabel(group)
    axis.set_title(title or "grounding score")
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure

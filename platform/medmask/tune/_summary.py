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


COST_COLUMNS = ("step_s", "peak_rss_mb", "peak_gpu_mb", "convergence_epoch", "probe_auc_best",
                "pretrain_wall_s", "finetune_wall_s", "trial_wall_s")


def comparison_table(trials: pd.DataFrame, group: str, x: str, metric: str,
                     baseline: str) -> pd.DataFrame:
    """The guide's comparison summary with measured numbers: one row per ``group`` value (a
    method), ``{metric} {x}`` mean and std over seeds per ``x`` value (e.g. fine-tuning mode),
    the gain over ``baseline`` in points of the metric, the seeds, the backbone, and the
    costs (mean step time and peak memory, with their change relative to ``baseline`` in %,
    the probe's convergence epoch and best AUC, mean wall seconds of pretraining, fine-tuning
    and the whole trial) where the trials carry them.

    Raises:
        ValueError: when a column is missing or ``baseline`` is not a value of ``group``.
    """
    missing = [c for c in (group, x, metric) if c not in trials.columns]
    if missing:
        raise ValueError(f"comparison columns {missing} are not in the trial table; columns: "
                         f"{sorted(trials.columns)}")
    if baseline not in set(trials[group]):
        raise ValueError(f"the comparison's baseline {baseline!r} is not a {group}: "
                         f"{sorted(set(trials[group]))}")
    rows: dict[str, dict[str, Any]] = {}
    for (name, value), cells in trials.groupby([group, x], sort=True):
        row = rows.setdefault(str(name), {group: name})
        row[f"{metric} {value}"] = float(cells[metric].mean())
        row[f"{metric} {value} std"] = float(cells[metric].std())
        row[f"seeds {value}"] = int(cells[metric].notna().sum())
    for name, cells in trials.groupby(group, sort=True):
        if "backbone" in cells:  # e.g. the MAE rows' MIM ViT beside the contrastive CNN
            rows[str(name)]["backbone"] = "/".join(sorted(set(cells["backbone"].astype(str))))
        for column in COST_COLUMNS:
            if column in cells and cells[column].notna().any():
                rows[str(name)][column] = float(cells[column].mean())
    table = pd.DataFrame(list(rows.values()))
    reference = table.set_index(group).loc[baseline]
    for value in sorted(set(trials[x])):
        column = f"{metric} {value}"
        table[f"gain {value}"] = table[column] - reference[column]
    for column in ("step_s", "peak_rss_mb", "peak_gpu_mb"):
        if column in table and np.isfinite(reference.get(column, np.nan)):
            table[f"{column} vs {baseline} %"] = 100 * (table[column] / reference[column] - 1)
    return table


def comparison_text(table: pd.DataFrame, group: str, smoke: bool) -> str:
    """The comparison as the guide's "Quick Reference Table": one column per method, one row
    per aspect; headed a smoke run when the models are tiny."""
    shown = table.set_index(group).T
    text = shown.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")
    head = ("SMOKE RUN (tiny models, few steps): not the guide's setting; " if smoke else "")
    return f"{head}measured comparison (mean over seeds; std rows: sample std)\n{text}"


def comparison_bars(summary: pd.DataFrame, group: str, x: str, metric: str,
                    title: str = "") -> Any:
    """The guide's "All Options Comparison" as measured: horizontal bars of the mean
    ``metric`` per ``group`` (one bar per ``x`` value), sample-std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(summary[group].unique(), key=str)
    values = sorted(summary[x].unique(), key=str)
    height = 0.8 / max(len(values), 1)
    figure, axis = plt.subplots(figsize=(7, 0.6 * len(names) * max(len(values), 1) + 1.5),
                                dpi=100)
    for k, value in enumerate(values):
        rows = summary[summary[x] == value].set_index(group).reindex(names)
        positions = np.arange(len(names)) + k * height
        axis.barh(positions, rows[f"{metric}_mean"], height=height,
                  xerr=rows[f"{metric}_std"].fillna(0.0), capsize=3, label=f"{x}={value}")
        for y, v in zip(positions, rows[f"{metric}_mean"], strict=True):
            if np.isfinite(v):
                axis.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    axis.set_yticks(np.arange(len(names)) + height * (len(values) - 1) / 2, names)
    axis.invert_yaxis()
    axis.set_xlabel(f"test {metric} (mean ± std over seeds)")
    axis.set_title(title or f"{metric} per {group}")
    axis.grid(alpha=0.3, axis="x")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def grounding_by_strategy(trials: pd.DataFrame, group: str, units: str,
                          resamples: int = 2000, seed: int = 0,
                          baseline: str | None = None) -> pd.DataFrame:
    """Per ``group`` value: the grounding score's mean over seeds with a 95% bootstrap
    interval (:func:`medmask.eval.paired_bootstrap` against 0: the images of every seed
    resampled), each seed's score, and the seeds. ``units``: the column holding each trial's
    per-image differences (drop_match - drop_non over the qualifying r); trials where no r
    qualified (no units) are counted apart. With a ``baseline`` value of ``group`` present,
    each other value also gets its paired difference to it (``diff_vs_<baseline>``, same
    seeds and test images, :func:`paired_bootstrap`; the seeds both scored)."""
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
    table = pd.DataFrame(rows)
    if baseline is not None and baseline in set(trials[group]):
        table = _with_paired_differences(table, trials, group, units, baseline, resamples,
                                         seed)
    return table


def _with_paired_differences(table: pd.DataFrame, trials: pd.DataFrame, group: str,
                             units: str, baseline: str, resamples: int, seed: int
                             ) -> pd.DataFrame:
    """``table`` with each ``group`` value's paired difference to ``baseline`` (the seeds
    where both arms scored the same images) and its 95% bootstrap interval."""
    def by_seed(name: str) -> dict[int, np.ndarray]:
        block = trials[trials[group] == name]
        return {int(s): np.asarray(u, np.float64) for s, u in zip(block["seed"], block[units],
                                                                   strict=True) if len(u)}

    reference = by_seed(baseline)
    column = f"diff_vs_{baseline}"
    out = {column: [], "diff_ci_low": [], "diff_ci_high": []}
    for name in table[group]:
        arm = by_seed(name)
        seeds = sorted(s for s in set(arm) & set(reference)
                       if arm[s].shape == reference[s].shape)
        if name == baseline or not seeds:
            values = (float("nan"),) * 3
        else:
            difference = paired_bootstrap([arm[s] for s in seeds],
                                          [reference[s] for s in seeds],
                                          resamples=resamples, seed=seed)
            values = (difference.difference, difference.low, difference.high)
        for key, value in zip(out, values, strict=True):
            out[key].append(value)
    return table.assign(**out)


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

"""Pictures for MLflow: mask galleries and organ overlays as plain RGB arrays (no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medmask import columns as C
from medmask.eval._clip_overlay import INPUTS, ROWS
from medmask.masking import apply_patch_mask, create_mask_strategy, inclusion_rate, num_masked

# organ code -> RGB (background black, right lung red, left lung green, heart blue)
ORGAN_COLORS = np.array([[0, 0, 0], [220, 60, 60], [60, 200, 60], [70, 110, 230]], np.uint8)


def to_rgb(images: np.ndarray) -> np.ndarray:
    """Grayscale float [..., H, W] in [0, 1] -> uint8 RGB [..., H, W, 3]."""
    gray = (np.clip(np.asarray(images, np.float32), 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def organ_overlay(images: np.ndarray, organs: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Organ label maps blended over grayscale images: uint8 RGB [B, H, W, 3]."""
    base = to_rgb(images).astype(np.float32)
    codes = np.clip(np.asarray(organs), 0, len(ORGAN_COLORS) - 1).astype(np.intp)
    color = ORGAN_COLORS[codes].astype(np.float32)
    inside = (codes > 0)[..., None]
    blended = np.where(inside, (1 - alpha) * base + alpha * color, base)
    return blended.round().astype(np.uint8)


def mask_gallery(columns: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tile image columns into one picture: row b shows ``columns[k][b]`` left to right.

    Args:
        columns: arrays [B, H, W] (grayscale float in [0, 1]) or [B, H, W, 3] (uint8 RGB),
            all with the same B, H, W.
        pad: white pixels between tiles.

    Returns:
        uint8 RGB [B * (H + pad) + pad, K * (W + pad) + pad, 3].
    """
    if not columns:
        raise ValueError("mask_gallery needs at least one column of images")
    tiles = [c if (c.ndim == 4 and c.dtype == np.uint8) else to_rgb(c) for c in columns]
    b, h, w, _ = tiles[0].shape
    if any(t.shape != (b, h, w, 3) for t in tiles):
        raise ValueError(f"gallery columns differ in shape: {[t.shape for t in tiles]}")
    out = np.full((b * (h + pad) + pad, len(tiles) * (w + pad) + pad, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        for row in range(b):  # a handful of tiles: layout, not data work
            y, x = pad + row * (h + pad), pad + k * (w + pad)
            out[y : y + h, x : x + w] = tile[row]
    return out


def sample_gallery(rows: dict[str, np.ndarray]) -> np.ndarray:
    """Original / organ map / masked image for a few samples (the preprocessing gallery)."""
    columns = [rows[C.IMAGE]]
    if C.ORGANS in rows:
        columns.append(organ_overlay(rows[C.IMAGE], rows[C.ORGANS]))
    if C.MASKED_IMAGE in rows:
        columns.append(rows[C.MASKED_IMAGE])
    return mask_gallery(columns)


def heatmap_rgb(values: np.ndarray) -> np.ndarray:
    """Per-image min-max scaled maps [B, H, W] as uint8 RGB with OpenCV's inferno colormap."""
    import cv2

    values = np.asarray(values, np.float64)
    low = values.min(axis=(1, 2), keepdims=True)
    span = np.maximum(values.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    scaled = np.round(255 * (values - low) / span).astype(np.uint8)
    flat = cv2.applyColorMap(scaled.reshape(-1, scaled.shape[-1]), cv2.COLORMAP_INFERNO)
    return flat.reshape(*scaled.shape, 3)[..., ::-1].copy()  # BGR -> RGB


def reward_curve(history: Any, *, x: str, y: str) -> Any:
    """Mean episode reward (the mean masked-patch reconstruction loss of the sampled masks)
    against env steps, from the policy's history table (columns ``x`` and ``y``): it rises as
    the policy learns to mask harder patches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=120)
    if len(history) and y in history:
        axis.plot(history[x], history[y], marker=".")
    axis.set_xlabel("env steps (images)")
    axis.set_ylabel("mean reward (reconstruction loss)")
    axis.set_title("AHM policy: reward curve")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure


@torch.no_grad()
def policy_figure(net: Any, images: np.ndarray, ratio: float, random_share: float
                  ) -> np.ndarray:
    """AHM Fig. 8: image / predicted loss (value head) / masking probability (the inclusion
    rate over 64 draws of the ordered sampler) / masked image, for a loaded policy ``net``
    (``net(x) -> (logits, values)`` with a ``grid``)."""
    x = torch.as_tensor(images[:, None])
    logits, values = net(x)
    generator = torch.Generator().manual_seed(0)
    mask = create_mask_strategy("ahm", policy=net, random_share=random_share)(
        {C.IMAGE: x}, net.grid, ratio, generator=generator)
    grid = net.grid
    rate = inclusion_rate(logits, num_masked(grid.num_patches, ratio), random_share, 64,
                          generator)
    masked = apply_patch_mask(x, grid, mask)[:, 0].numpy()
    return mask_gallery([images, heatmap_rgb(grid.unpool(values).numpy()),
                         heatmap_rgb(grid.unpool(rate).numpy()), masked])


def segmentation_figure(images: np.ndarray, targets: np.ndarray, preds: np.ndarray
                        ) -> np.ndarray:
    """Image / ground truth / prediction rows (label maps as colour overlays)."""
    return mask_gallery([images, organ_overlay(images, targets), organ_overlay(images, preds)])


GROUNDING_STYLES = {"anatomical": ("tab:red", "o"), "matched_anatomical": ("tab:orange", "s"),
                    "non_anatomical": ("tab:blue", "^")}


def grounding_figure(table: Any, title: str = "visual grounding") -> Any:
    """Drops against the area actually masked (not only against r): the mean drop in the
    true-label probability (left) and in accuracy (right) of each masking condition, one point
    per target ratio r at its mean achieved area, labelled with r (the grounding protocol's
    table: columns ratio, condition, achieved_mean, drop, accuracy_drop, qualifies; ratios that
    do not qualify are drawn hollow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for axis, column, label in ((axes[0], "drop", "drop in p(true label)"),
                                (axes[1], "accuracy_drop", "accuracy drop")):
        for condition, (color, marker) in GROUNDING_STYLES.items():
            rows = table[table["condition"] == condition].sort_values("achieved_mean")
            if not len(rows):
                continue
            axis.plot(rows["achieved_mean"], rows[column], color=color, alpha=0.6,
                      label=condition.replace("_", " "))
            qualifies = rows["qualifies"].to_numpy(bool)
            axis.scatter(rows["achieved_mean"][qualifies], rows[column][qualifies],
                         color=color, marker=marker, zorder=3)
            axis.scatter(rows["achieved_mean"][~qualifies], rows[column][~qualifies],
                         facecolors="none", edgecolors=color, marker=marker, zorder=3)
            for _, row in rows.iterrows():
                axis.annotate(f"r={row['ratio']:g}", (row["achieved_mean"], row[column]),
                              textcoords="offset points", xytext=(3, 3), fontsize=7)
        axis.axhline(0.0, color="gray", lw=0.8)
        axis.set_xlabel("achieved masked area (fraction of the image)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    plt.close(figure)
    return figure


def overlay_grid_figure(grid: Any, reading: str = "binary",
                        title: str = "contour overlays (Table 2 layout)") -> Any:
    """Table 2's grid as a heatmap: rows (method, training data), columns original / overlay
    test, each cell annotated with its mean and interval (the ``clip_overlay`` protocol's grid:
    columns method, train, test, ``<reading>_mean``, ``_low``, ``_high``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows, tests = ROWS, INPUTS
    values = np.full((len(rows), len(tests)), np.nan)
    notes = [["" for _ in tests] for _ in rows]
    for i, (method, train) in enumerate(rows):
        for j, test in enumerate(tests):
            match = grid[(grid["method"] == method) & (grid["test"] == test)
                         & (grid["train"].isna() if train is None else grid["train"] == train)]
            if len(match):
                cell = match.iloc[0]
                values[i, j] = cell[f"{reading}_mean"]
                notes[i][j] = (f"{cell[f'{reading}_mean']:.3f}\n[{cell[f'{reading}_low']:.3f}, "
                               f"{cell[f'{reading}_high']:.3f}]")
    figure, axis = plt.subplots(figsize=(4.8, 4.6), dpi=120)
    image = axis.imshow(values, cmap="viridis", aspect="auto")
    for i in range(len(rows)):
        for j in range(len(tests)):
            axis.text(j, i, notes[i][j], ha="center", va="center", fontsize=8,
                      color="white" if pd.notna(values[i, j]) and values[i, j] < np.nanmean(
                          values) else "black")
    axis.set_xticks(range(len(tests)), [f"test {t}" for t in tests])
    axis.set_yticks(range(len(rows)), [m if t is None else f"{m} / train {t}" for m, t in rows])
    figure.colorbar(image, ax=axis, label=f"{reading} accuracy")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    plt.close(figure)
    return figure


def overlay_artifacts(result: Any, title: str) -> dict[str, Any]:
    """What a contour-overlay study logs (artifact file -> table or figure): Table 2's
    layout, the grid, every cell, the test-time gains, the baselines and the grid heatmap
    (:class:`medmask.eval.OverlayResult`)."""
    return {"clip_overlay_table2.csv": result.layout(),
            "clip_overlay_grid.csv": result.grid,
            "clip_overlay_cells.csv": result.cells,
            "clip_overlay_gains.csv": result.gains,
            "clip_overlay_baselines.csv": result.baselines,
            "clip_overlay_grid.png": overlay_grid_figure(result.grid, result.settings.reading,
                                                         title)}

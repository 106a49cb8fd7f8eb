"""Pictures for MLflow: mask galleries and organ overlays as plain RGB arrays (no I/O)."""

from __future__ import annotations

import numpy as np

from medmask import columns as C

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

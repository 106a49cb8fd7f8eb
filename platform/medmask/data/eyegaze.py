"""EYEGAZE / egd-cxr (Karargyris et al., Scientific Data 2021; PhysioNet): radiologist gaze on
1,083 MIMIC-CXR images.

Layout (root = ``egd-cxr/1.0.0``):

- ``master_sheet.csv``: one row per image: ``dicom_id``, ``path`` (the MIMIC-CXR DICOM path,
  ``files/pNN/p<subject>/s<study>/<dicom_id>.dcm``), ``study_id``, ``patient_id``, the
  paddings used on screen (``image_top_pad``, ...) and the one-hot classes ``Normal``, ``CHF``,
  ``pneumonia`` (plus finer findings);
- ``fixations.csv``: ``DICOM_ID``, ``X_ORIGINAL``, ``Y_ORIGINAL`` (fixations in original image
  pixels; -1 when the gaze fell outside the image), with screen coordinates and timings;
- ``bounding_boxes.csv``: ``dicom_id``, ``bbox_name``, ``x1``, ``x2``, ``y1``, ``y2``: anatomy
  boxes in original image pixels.

Images are not shipped: they come from MIMIC-CXR-JPG (``image_root``), the same file name with
``.jpg``. Static heatmaps are not shipped either; the dataset's own script
(``create_heatmap_images_and_or_videos.py``) adds 1 at each fixation's original pixel and applies
``scipy.ndimage.gaussian_filter(record, sigma=150)``. :func:`gaze_heatmap` computes that with
OpenCV (same kernel: radius ``int(4 sigma + 0.5)``, reflect border); at another output size the
fixations are scaled to it and sigma scales with the image (``150 * out / original`` per axis).
Fixations at -1 or outside the image are ignored and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.manifest import (
    ATTR_CLASSES,
    check_on_missing,
    drop_missing_files,
    finish_manifest,
    read_table,
    require_file,
)

MASTER_SHEET, FIXATIONS, BOUNDING_BOXES = "master_sheet.csv", "fixations.csv", "bounding_boxes.csv"
EYEGAZE_CLASSES: tuple[str, ...] = ("Normal", "CHF", "pneumonia")
FIX_ID, FIX_X, FIX_Y = "DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL"
BOX_COLUMNS = ("dicom_id", "bbox_name", "x1", "x2", "y1", "y2")
GAZE_SIGMA = 150.0  # pixels at original resolution (the dataset's script)
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default
N_FIXATIONS, N_FIXATIONS_OUTSIDE = "n_fixations", "n_fixations_outside"


def load_eyegaze(
    root: Path,
    *,
    image_root: str | Path | None = None,
    image_ext: str = ".jpg",
    on_missing: str = "drop",
) -> pd.DataFrame:
    """One row per image: ``label`` (Normal 0, CHF 1, pneumonia 2), patient, fixation counts.

    Args:
        root: the egd-cxr folder.
        image_root: the MIMIC-CXR-JPG root holding ``files/`` (default: ``root``).
        image_ext: the image files' extension replacing the sheet's ``.dcm``.
        on_missing: ``"drop"`` (counted) or ``"raise"`` for image files missing on disk.

    Returns:
        the manifest, with ``n_fixations`` and ``n_fixations_outside`` (-1 coordinates) per
        image; ``attrs["fixations_outside"]`` totals the latter.
    """
    check_on_missing(on_missing)
    image_root = Path(image_root) if image_root is not None else root
    sheet_path = require_file(root / MASTER_SHEET, "EYEGAZE master sheet")
    sheet = read_table(sheet_path, ("dicom_id", "path", "patient_id", *EYEGAZE_CLASSES))
    onehot = sheet[list(EYEGAZE_CLASSES)].to_numpy(dtype=float)
    not_one = np.flatnonzero(np.nansum(onehot == 1, axis=1) != 1)
    if len(not_one):
        raise ValueError(f"{sheet_path}: rows must have exactly one of {EYEGAZE_CLASSES} = 1, "
                         f"e.g. dicom_id {sheet['dicom_id'].iloc[not_one[0]]}")
    label = np.nan_to_num(onehot).argmax(1).astype(np.int64)
    df = pd.DataFrame({
        C.ID: sheet["dicom_id"].astype(str).to_numpy(),
        C.PATH: [str(image_root / Path(p).with_suffix(image_ext)) for p in sheet["path"]],
        C.PATIENT: sheet["patient_id"].astype(str).to_numpy(),
        C.LABEL: label,
        C.LABEL_NAME: np.asarray(EYEGAZE_CLASSES, dtype=object)[label],
    })
    fixations = read_fixations(root)
    outside = (fixations[FIX_X] < 0) | (fixations[FIX_Y] < 0)
    per_image = fixations.groupby(FIX_ID).size()
    per_image_outside = outside.groupby(fixations[FIX_ID]).sum()
    df[N_FIXATIONS] = df[C.ID].map(per_image).fillna(0).astype(np.int64).to_numpy()
    df[N_FIXATIONS_OUTSIDE] = df[C.ID].map(per_image_outside).fillna(0).astype(np.int64)
    dropped: dict[str, int] = {}
    df = drop_missing_files(df, on_missing, dropped)
    return finish_manifest(df, "eyegaze", dropped, **{ATTR_CLASSES: list(EYEGAZE_CLASSES)},
                           fixations_outside=int(outside.sum()),
                           images_without_fixations=int((df[N_FIXATIONS] == 0).sum()))


def read_fixations(root: Path) -> pd.DataFrame:
    """``fixations.csv`` (``DICOM_ID``, ``X_ORIGINAL``, ``Y_ORIGINAL``, ...)."""
    path = require_file(Path(root) / FIXATIONS, "EYEGAZE fixations CSV")
    table = read_table(path, (FIX_ID, FIX_X, FIX_Y))
    table[FIX_ID] = table[FIX_ID].astype(str)
    return table


def read_bounding_boxes(root: Path) -> pd.DataFrame:
    """``bounding_boxes.csv`` (``dicom_id, bbox_name, x1, x2, y1, y2`` in original pixels)."""
    path = require_file(Path(root) / BOUNDING_BOXES, "EYEGAZE bounding boxes CSV")
    table = read_table(path, BOX_COLUMNS)
    table["dicom_id"] = table["dicom_id"].astype(str)
    return table


def gaze_heatmap(
    x: Iterable[float],
    y: Iterable[float],
    original_shape: tuple[int, int],
    out_shape: tuple[int, int] | None = None,
    *,
    sigma: float = GAZE_SIGMA,
    normalize: bool = False,
) -> tuple[np.ndarray, int]:
    """The dataset's static fixation heatmap: +1 per fixation, then a Gaussian filter.

    Args:
        x, y: fixation coordinates in original pixels (``X_ORIGINAL``, ``Y_ORIGINAL``).
        original_shape: (H, W) of the original image.
        out_shape: (H', W') to compute at (fixations at ``floor(x * W'/W)``, sigma scaled by
            ``W'/W`` and ``H'/H``); None = the original resolution, exactly the script.
        sigma: Gaussian sigma in original pixels (150 in the dataset's script).
        normalize: divide by the maximum (when positive).

    Returns:
        (float32 heatmap [H', W'], number of fixations ignored: -1, NaN or outside the image).
    """
    height, width = (int(v) for v in original_shape)
    out_h, out_w = (height, width) if out_shape is None else (int(v) for v in out_shape)
    xs = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=float).ravel()
    ys = np.asarray(list(y) if not isinstance(y, np.ndarray) else y, dtype=float).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"gaze x and y differ in length: {xs.size} vs {ys.size}")
    inside = np.isfinite(xs) & np.isfinite(ys) & (xs >= 0) & (ys >= 0) & (xs < width) & (
        ys < height)
    scale_x, scale_y = out_w / width, out_h / height
    cols = np.minimum((xs[inside] * scale_x).astype(np.int64), out_w - 1)
    rows = np.minimum((ys[inside] * scale_y).astype(np.int64), out_h - 1)
    record = np.zeros((out_h, out_w), np.float64)
    np.add.at(record, (rows, cols), 1.0)
    heatmap = cv2.sepFilter2D(record, cv2.CV_64F, _gaussian_kernel(sigma * scale_x),
                              _gaussian_kernel(sigma * scale_y), borderType=cv2.BORDER_REFLECT)
    if normalize and heatmap.max() > 0:
        heatmap = heatmap / heatmap.max()
    return heatmap.astype(np.float32), int((~inside).sum())


def image_gaze_heatmap(
    fixations: pd.DataFrame,
    image_id: str,
    original_shape: tuple[int, int],
    out_shape: tuple[int, int] | None = None,
    **options: float | bool,
) -> tuple[np.ndarray, int]:
    """:func:`gaze_heatmap` of one image's rows of ``fixations.csv``."""
    rows = fixations[fixations[FIX_ID] == str(image_id)]
    return gaze_heatmap(rows[FIX_X].to_numpy(), rows[FIX_Y].to_numpy(), original_shape,
                        out_shape, **options)  # type: ignore[arg-type]


def anatomy_map(
    boxes: pd.DataFrame,
    original_shape: tuple[int, int],
    out_shape: tuple[int, int] | None = None,
    names: Iterable[str] | None = None,
) -> np.ndarray:
    """Binary anatomy map: the union of an image's boxes (``[y1, y2) x [x1, x2)``, clipped).

    Args:
        boxes: that image's rows of ``bounding_boxes.csv``.
        original_shape: (H, W) of the original image (box coordinates' frame).
        out_shape: (H', W') to scale the boxes to; None = original resolution.
        names: keep only these ``bbox_name`` values (None = all).
    """
    height, width = (int(v) for v in original_shape)
    out_h, out_w = (height, width) if out_shape is None else (int(v) for v in out_shape)
    if names is not None:
        boxes = boxes[boxes["bbox_name"].isin(list(names))]
    coords = boxes[["x1", "x2", "y1", "y2"]].to_numpy(dtype=float)
    x0 = np.clip(np.floor(np.minimum(coords[:, 0], coords[:, 1]) * out_w / width), 0, out_w)
    x1 = np.clip(np.ceil(np.maximum(coords[:, 0], coords[:, 1]) * out_w / width), 0, out_w)
    y0 = np.clip(np.floor(np.minimum(coords[:, 2], coords[:, 3]) * out_h / height), 0, out_h)
    y1 = np.clip(np.ceil(np.maximum(coords[:, 2], coords[:, 3]) * out_h / height), 0, out_h)
    in_rows = (np.arange(out_h)[None, :] >= y0[:, None]) & (np.arange(out_h)[None, :] < y1[:, None])
    in_cols = (np.arange(out_w)[None, :] >= x0[:, None]) & (np.arange(out_w)[None, :] < x1[:, None])
    return (in_rows.T.astype(np.int32) @ in_cols.astype(np.int32)) > 0


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius ``int(4 sigma + 0.5)``, normalized to sum 1."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()

"""CheXmask (Gaggion et al., PhysioNet 2023): RLE lung and heart masks for public CXR sets.

Layout: one CSV per source dataset (``MIMIC-CXR-JPG.csv``, ``ChestX-Ray8.csv``,
``CheXpert.csv``, ``Padchest.csv``, ``VinDr-CXR.csv``; ``.csv`` or ``.csv.gz``), under
``OriginalResolution/`` (masks at the source image's size; the default) or ``Preprocessed/``
(1024 x 1024), or directly in the root. Columns: the source's image id (``dicom_id``,
``Image Index``, ``Path``, ``ImageID``, ``image_id``), ``Dice RCA (Mean)``, ``Dice RCA (Max)``,
``Landmarks``, ``Left Lung``, ``Right Lung``, ``Heart``, ``Height``, ``Width``.

RLE (the dataset's ``get_RLE_from_mask``/``get_mask_from_RLE``): whitespace-separated
``start length`` pairs over the row-major flattening of the Height x Width mask, starts
1-indexed; ``-1`` or an empty string means no mask. The data dictionary recommends using only
masks with ``Dice RCA (Mean) >= 0.7``: that is the default filter here, and what it drops is
counted in ``df.attrs["dropped"]["low_quality"]``.

Organ label map (:func:`organ_map`): 0 background, 1 right lung, 2 left lung, 3 heart, painted in
that order, so the heart wins where it overlaps a lung (the cardiac silhouette overlaps the
lung fields in projection, and the heart is the structure whose outline the radiograph shows
there); "Right Lung" is the patient's right lung (the image's left side on a PA view).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.manifest import (
    check_on_missing,
    drop_missing_files,
    finish_manifest,
    read_table,
    require_dir,
)
from medmask.data.mimic_cxr import read_metadata

# The image-id column of each source CSV (as written by the dataset's own scripts).
ID_COLUMNS: Mapping[str, str] = {
    "MIMIC-CXR-JPG": "dicom_id",
    "ChestX-Ray8": "Image Index",
    "CheXpert": "Path",
    "Padchest": "ImageID",
    "VinDr-CXR": "image_id",
}
DICE_MEAN, DICE_MAX = "Dice RCA (Mean)", "Dice RCA (Max)"
LEFT_LUNG, RIGHT_LUNG, HEART = "Left Lung", "Right Lung", "Heart"
HEIGHT, WIDTH, LANDMARKS = "Height", "Width", "Landmarks"
CSV_COLUMNS = (DICE_MEAN, LEFT_LUNG, RIGHT_LUNG, HEART, HEIGHT, WIDTH)

# Manifest columns specific to CheXmask.
RLE_RIGHT_LUNG, RLE_LEFT_LUNG, RLE_HEART = "rle_right_lung", "rle_left_lung", "rle_heart"
MASK_HEIGHT, MASK_WIDTH = "mask_height", "mask_width"
DICE_RCA_MEAN, DICE_RCA_MAX = "dice_rca_mean", "dice_rca_max"
DEFAULT_MIN_DICE = 0.7
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def rle_decode(rle: str | float | None, height: int, width: int) -> np.ndarray:
    """Decode a CheXmask RLE string into a bool mask [height, width].

    ``start length`` pairs, starts 1-indexed over the row-major flattening; ``-1``, an empty
    string, None or NaN decode to an all-False mask.

    Raises:
        ValueError: non-integer tokens, an odd token count, or runs outside the mask.
    """
    size = int(height) * int(width)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return np.zeros((height, width), bool)
    text = str(rle).strip()
    if text in ("", "-1"):
        return np.zeros((height, width), bool)
    try:
        runs = np.array(text.split(), dtype=np.int64)
    except ValueError as error:
        raise ValueError(f"RLE must be integers, got {text[:40]!r}...") from error
    if runs.size % 2:
        raise ValueError(f"RLE needs 'start length' pairs, got {runs.size} numbers")
    starts, lengths = runs[0::2] - 1, runs[1::2]
    ends = starts + lengths
    if (starts < 0).any() or (lengths < 0).any() or (ends > size).any():
        raise ValueError(f"RLE runs fall outside a {height}x{width} mask (starts are 1-indexed)")
    edges = np.zeros(size + 1, np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    return (np.cumsum(edges[:-1]) > 0).reshape(height, width)


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = inside) as CheXmask RLE; an empty mask gives ``""``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    pixels = np.concatenate([[0], mask.reshape(-1) != 0, [0]]).astype(np.int8)
    runs = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1  # 1-indexed run boundaries
    runs[1::2] -= runs[0::2]
    return " ".join(map(str, runs))


def organ_map(
    right_lung: str | float | None,
    left_lung: str | float | None,
    heart: str | float | None,
    height: int,
    width: int,
) -> np.ndarray:
    """uint8 [H, W] organ label map from the three RLE strings (heart painted over the lungs)."""
    organs = np.zeros((height, width), np.uint8)
    organs[rle_decode(right_lung, height, width)] = C.ORGAN_RIGHT_LUNG
    organs[rle_decode(left_lung, height, width)] = C.ORGAN_LEFT_LUNG
    organs[rle_decode(heart, height, width)] = C.ORGAN_HEART
    return organs


def row_organ_map(row: Mapping[str, Any], expected_shape: tuple[int, int] | None = None
                  ) -> np.ndarray:
    """The organ map of one manifest row, at the mask's Height x Width.

    Raises:
        ValueError: ``expected_shape`` (e.g. the image's size) differs from the mask's.
    """
    height, width = int(row[MASK_HEIGHT]), int(row[MASK_WIDTH])
    if expected_shape is not None and (height, width) != tuple(expected_shape):
        raise ValueError(f"CheXmask mask of {row[C.ID]} is {height}x{width}, expected "
                         f"{expected_shape[0]}x{expected_shape[1]} (the image's size)")
    return organ_map(row[RLE_RIGHT_LUNG], row[RLE_LEFT_LUNG], row[RLE_HEART], height, width)


def load_chexmask(
    root: Path,
    *,
    source: str = "MIMIC-CXR-JPG",
    image_root: str | Path | None = None,
    resolution: str = "OriginalResolution",
    min_dice: float | None = DEFAULT_MIN_DICE,
    id_column: str | None = None,
    on_missing: str = "drop",
    keep_landmarks: bool = False,
) -> pd.DataFrame:
    """Pair each CheXmask row with its source image.

    Args:
        root: the CheXmask folder (with ``OriginalResolution/``) or the folder holding the CSV.
        source: which CSV: one of :data:`ID_COLUMNS`.
        image_root: the source dataset's own root (MIMIC-CXR-JPG root with its metadata CSV
            and ``files/``; the NIH root with ``images_0NN/images/``; the CheXpert root holding
            ``CheXpert-v1.0/``; a folder holding the PadChest or (converted) VinDr images).
        resolution: the sub-folder to read the CSV from when present.
        min_dice: keep rows with ``Dice RCA (Mean) >= min_dice`` (None keeps all); the rest is
            counted as ``low_quality``.
        id_column: override the id column (for sources not in :data:`ID_COLUMNS`).
        on_missing: ``"drop"`` (counted) or ``"raise"`` for images missing on disk.
        keep_landmarks: keep the ``Landmarks`` column (large).

    Returns:
        a manifest with ``id``, ``path``, ``patient_id`` (where the source gives one), the RLE
        columns ``rle_right_lung``/``rle_left_lung``/``rle_heart``, ``mask_height``,
        ``mask_width``, ``dice_rca_mean``/``dice_rca_max``; decode with :func:`row_organ_map`.
    """
    check_on_missing(on_missing)
    if source not in ID_COLUMNS and id_column is None:
        raise ValueError(f"unknown CheXmask source {source!r}; valid: {sorted(ID_COLUMNS)} "
                         "(or pass id_column=)")
    if image_root is None:
        raise ValueError("chexmask needs image_root=: the folder of the source dataset "
                         f"({source}) whose images the masks belong to")
    image_root = require_dir(Path(image_root), f"{source} image root")
    id_column = id_column or ID_COLUMNS[source]
    csv_path = _find_csv(Path(root), source, resolution)
    table = read_table(csv_path, (id_column, *CSV_COLUMNS))
    dropped: dict[str, int] = {}
    if min_dice is not None:
        keep = table[DICE_MEAN].to_numpy(dtype=float) >= min_dice  # NaN fails too
        dropped["low_quality"] = int((~keep).sum())
        table = table.loc[keep]
    df = pd.DataFrame({
        C.ID: table[id_column].astype(str).to_numpy(),
        RLE_RIGHT_LUNG: table[RIGHT_LUNG].fillna("").astype(str).to_numpy(),
        RLE_LEFT_LUNG: table[LEFT_LUNG].fillna("").astype(str).to_numpy(),
        RLE_HEART: table[HEART].fillna("").astype(str).to_numpy(),
        MASK_HEIGHT: table[HEIGHT].to_numpy(dtype=np.int64),
        MASK_WIDTH: table[WIDTH].to_numpy(dtype=np.int64),
        DICE_RCA_MEAN: table[DICE_MEAN].to_numpy(dtype=float),
    })
    if DICE_MAX in table.columns:
        df[DICE_RCA_MAX] = table[DICE_MAX].to_numpy(dtype=float)
    if keep_landmarks and LANDMARKS in table.columns:
        df[LANDMARKS] = table[LANDMARKS].astype(str).to_numpy()
    df = _attach_paths(df, source, image_root, dropped)
    df = drop_missing_files(df, on_missing, dropped)
    return finish_manifest(df, f"chexmask:{source}", dropped, chexmask_csv=str(csv_path),
                           min_dice=min_dice)


def _find_csv(root: Path, source: str, resolution: str) -> Path:
    folders = [root / resolution, root]
    names = [f"{source}.csv", f"{source}.csv.gz"]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"CheXmask CSV for {source} not found: expected one of {names} "
                            f"in {folders[0]} or {folders[1]}")


def _attach_paths(df: pd.DataFrame, source: str, image_root: Path,
                  dropped: dict[str, int]) -> pd.DataFrame:
    """Set ``path`` (and ``patient_id``) from the source dataset's layout."""
    if source == "MIMIC-CXR-JPG":

        meta = read_metadata(image_root).set_index("dicom_id")
        known = df[C.ID].isin(meta.index)
        dropped["not_in_source_metadata"] = int((~known).sum())
        df = df.loc[known].reset_index(drop=True)
        rows = meta.loc[df[C.ID]]
        df[C.PATH] = rows[C.PATH].to_numpy()
        df[C.PATIENT] = rows[C.PATIENT].to_numpy()
        return df
    if source == "CheXpert":
        df[C.PATH] = [str(_chexpert_path(image_root, p)) for p in df[C.ID]]
        df[C.PATIENT] = [_first_match(r"(patient\d+)", p) for p in df[C.ID]]
        return df
    index = _index_images(image_root)
    df[C.PATH] = [str(index.get(_key(i), image_root / i)) for i in df[C.ID]]
    if source == "ChestX-Ray8":  # NIH names are <patient>_<follow-up>.png
        df[C.PATIENT] = [str(int(i.split("_")[0])) if i.split("_")[0].isdigit() else i
                         for i in df[C.ID]]
    return df


def _chexpert_path(image_root: Path, relative: str) -> Path:
    """CheXpert ``Path`` values start with ``CheXpert-v1.0/``; accept roots above or at it."""
    direct = image_root / relative
    if direct.is_file():
        return direct
    parts = Path(relative).parts
    return image_root.joinpath(*parts[1:]) if len(parts) > 1 else direct


def _index_images(image_root: Path) -> dict[str, Path]:
    """File name (and stem, for ids given without extension) -> path, searched recursively."""
    index: dict[str, Path] = {}
    for path in image_root.rglob("*"):
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            index.setdefault(path.name, path)
            index.setdefault(path.stem, path)
    return index


def _key(image_id: str) -> str:
    return Path(image_id).name


def _first_match(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(1) if match else text

"""COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021; Kaggle).

Layout (root = ``COVID-19_Radiography_Dataset``, or its parent):

- four class folders ``COVID/``, ``Lung_Opacity/``, ``Normal/``, ``Viral Pneumonia/`` (a space),
  each with ``images/`` (299 x 299 PNG) and ``masks/`` (256 x 256 PNG lung masks) holding the
  same file names (``COVID-1.png``);
- per-class metadata workbooks ``COVID.metadata.xlsx``, ``Lung_Opacity.metadata.xlsx``,
  ``Normal.metadata.xlsx``, ``Viral Pneumonia.metadata.xlsx`` with columns ``FILE NAME``
  (without extension; Normal's upper-case, ``NORMAL-1``), ``FORMAT``, ``SIZE``, ``URL``.

Labels follow :data:`medmask.columns.COVID_CLASSES` (Normal 0, COVID 1, Lung_Opacity 2,
Viral Pneumonia 3). The dataset has no patient ids and no split: each image is its own patient
(``patient_id`` = ``id``), and :mod:`medmask.data.splits` draws stratified splits.

The lung masks (``organs_path``) show both lungs as ONE white region and are smaller than the
images: an organ map built from them has lungs only (no heart), the lungs told apart by image
half (1 = right lung on the image's left half, 2 = left lung on the right half, as on a PA view),
and the mask is resized to the image (nearest neighbour), which the pipeline counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.manifest import ATTR_CLASSES, check_on_missing, finish_manifest, require_dir

DATASET_FOLDER = "COVID-19_Radiography_Dataset"
META_FILE_NAME, META_URL = "FILE NAME", "URL"
META_COLUMNS = (META_FILE_NAME, "FORMAT", "SIZE", META_URL)
ORIGIN_URL = "origin_url"
IMAGE_SIZE, MASK_SIZE = 299, 256


def load_covid_radiography(
    root: Path,
    *,
    classes: Sequence[str] = C.COVID_CLASSES,
    masks: bool = True,
    metadata: bool = True,
    on_missing: str = "drop",
) -> pd.DataFrame:
    """One row per image: ``label``/``label_name``, ``organs_path`` (lung mask or ``""``).

    Args:
        root: the dataset folder (or its parent holding ``COVID-19_Radiography_Dataset``).
        classes: which class folders to read (all four must exist when asked for); labels
            keep the :data:`~medmask.columns.COVID_CLASSES` codes.
        masks: pair each image with ``<Class>/masks/<same name>``; images without a mask get
            ``organs_path = ""``, counted in ``attrs["missing_masks"]`` (``on_missing="raise"``
            raises instead).
        metadata: read ``<Class>.metadata.xlsx`` when present and add its ``URL`` as
            ``origin_url``; images absent from the workbook are counted in
            ``attrs["not_in_metadata"]``.
        on_missing: ``"drop"`` (count) or ``"raise"`` for missing masks.
    """
    check_on_missing(on_missing)
    unknown = sorted(set(classes) - set(C.COVID_CLASSES))
    if unknown:
        raise ValueError(f"unknown COVID-19 Radiography classes {unknown}; "
                         f"valid: {list(C.COVID_CLASSES)}")
    root = _dataset_root(Path(root))
    frames = [_read_class(root, name, masks, metadata) for name in classes]
    df = pd.concat(frames, ignore_index=True)
    missing_masks = int((df[C.ORGANS_PATH] == "").sum()) if masks else 0
    if missing_masks and on_missing == "raise":
        example = df.loc[df[C.ORGANS_PATH] == "", C.PATH].iloc[0]
        raise FileNotFoundError(f"{missing_masks} image(s) have no lung mask, e.g. {example} "
                                "(expected <Class>/masks/<same name>)")
    not_in_metadata = int(df.pop("_not_in_metadata").sum())
    return finish_manifest(df, "covid_radiography", {}, **{ATTR_CLASSES: list(C.COVID_CLASSES)},
                           missing_masks=missing_masks, not_in_metadata=not_in_metadata)


def _dataset_root(root: Path) -> Path:
    if not any((root / name).is_dir() for name in C.COVID_CLASSES) and (
            root / DATASET_FOLDER).is_dir():
        return root / DATASET_FOLDER
    return root


def _read_class(root: Path, name: str, masks: bool, metadata: bool) -> pd.DataFrame:
    folder = require_dir(root / name, f"COVID-19 Radiography class folder '{name}' "
                                      f"(expected {list(C.COVID_CLASSES)} under {root})")
    images = sorted(require_dir(folder / "images", f"'{name}' images folder").glob("*.png"))
    if not images:
        raise ValueError(f"no PNG images in {folder / 'images'}")
    df = pd.DataFrame({
        C.ID: [p.stem for p in images],
        C.PATH: [str(p) for p in images],
        C.LABEL: C.COVID_CLASSES.index(name),
        C.LABEL_NAME: name,
    })
    df[C.PATIENT] = df[C.ID]
    if masks:
        mask_dir = folder / "masks"
        df[C.ORGANS_PATH] = [str(mask_dir / p.name) if (mask_dir / p.name).is_file() else ""
                             for p in images]
    df["_not_in_metadata"] = False
    workbook = root / f"{name}.metadata.xlsx"
    if metadata and workbook.is_file():
        urls = _read_metadata(workbook)
        keys = df[C.ID].str.upper()
        df[ORIGIN_URL] = keys.map(urls).fillna("").to_numpy()
        df["_not_in_metadata"] = ~keys.isin(urls.index).to_numpy()
    df[C.LABEL] = df[C.LABEL].astype("int64")
    return df


def _read_metadata(path: Path) -> pd.Series:
    """``FILE NAME`` (upper-cased: Normal's workbook differs in case from the files) -> URL."""
    try:
        table = pd.read_excel(path)
    except Exception as error:  # openpyxl raises several unrelated types
        raise ValueError(f"cannot read metadata workbook {path}: {error}") from error
    missing = [c for c in META_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; it has {list(table.columns)}")
    keys = table[META_FILE_NAME].astype(str).str.strip().str.upper()
    return pd.Series(table[META_URL].astype(str).to_numpy(), index=keys.to_numpy())


def organs_from_lung_mask(mask: np.ndarray) -> np.ndarray:
    """A binary lung mask (both lungs one region) -> organ codes by image half.

    1 (right lung) on the image's left half, 2 (left lung) on the right half; no heart.
    Works on [H, W] or a batch [B, H, W].
    """
    lungs = np.asarray(mask) > 0
    width = lungs.shape[-1]
    side = np.where(np.arange(width) < width // 2, C.ORGAN_RIGHT_LUNG, C.ORGAN_LEFT_LUNG)
    return np.where(lungs, side.astype(np.uint8), np.uint8(C.ORGAN_BACKGROUND)).astype(np.uint8)

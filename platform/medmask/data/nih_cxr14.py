"""NIH ChestX-ray14 (Wang et al., CVPR 2017): 112,120 frontal images, 14 text-mined findings.

Layout (root = the downloaded ``CXR8`` folder or the Kaggle ``data`` folder):

- ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``): ``Image Index``,
  ``Finding Labels`` (findings joined by ``|``, or ``No Finding``), ``Follow-up #``,
  ``Patient ID``, ``Patient Age``, ``Patient Gender``, ``View Position``, ... (the original
  header ends with a comma, so pandas sees an extra empty ``Unnamed`` column: ignored);
- ``train_val_list.txt`` and ``test_list.txt``: the official patient-disjoint lists, one image
  name per line;
- images ``images_001/images/*.png`` ... ``images_012/images/*.png`` (Kaggle) or
  ``images/*.png`` (the NIH box archives extracted in place).

The official train_val list is split into train and val by patient (stratified, seeded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.manifest import (
    ATTR_FINDINGS,
    check_on_missing,
    drop_missing_files,
    find_file,
    finish_manifest,
    read_table,
    require_file,
)
from medmask.data.splits import carve_validation

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"
IMAGE_INDEX, FINDING_LABELS, PATIENT_ID, VIEW = (
    "Image Index", "Finding Labels", "Patient ID", "View Position")
ENTRY_FILES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
TRAIN_VAL_LIST, TEST_LIST = "train_val_list.txt", "test_list.txt"


def index_images(root: Path) -> dict[str, Path]:
    """Image name -> path over ``images_0NN/images/`` and ``images/``."""
    index: dict[str, Path] = {}
    for pattern in ("images_*/images/*.png", "images/*.png"):
        for path in sorted(root.glob(pattern)):
            index.setdefault(path.name, path)
    return index


def parse_finding_labels(values: pd.Series) -> np.ndarray:
    """``Finding Labels`` strings -> float [N, 14] multi-hot in :data:`NIH_FINDINGS` order.

    Raises:
        ValueError: a label outside the 14 findings and ``No Finding``.
    """
    position = {name: k for k, name in enumerate(NIH_FINDINGS)}
    out = np.zeros((len(values), len(NIH_FINDINGS)), np.float64)
    for row, text in enumerate(values.astype(str)):
        for label in text.split("|"):
            label = label.strip()
            if label == NO_FINDING:
                continue
            if label not in position:
                raise ValueError(f"unknown finding {label!r} in '{FINDING_LABELS}' "
                                 f"{text!r}; expected {NIH_FINDINGS} or {NO_FINDING!r}")
            out[row, position[label]] = 1.0
    return out


def load_nih_cxr14(
    root: Path,
    *,
    split: str = "official",
    val_fraction: float = 0.1,
    seed: int = 0,
    views: tuple[str, ...] | None = None,
    on_missing: str = "drop",
) -> pd.DataFrame:
    """One row per image with 14 finding columns (0/1) and the official test split.

    Args:
        root: the dataset folder.
        split: ``"official"`` (needs the two list files; val carved from train_val by patient,
            stratified) or ``"none"`` (no split column).
        val_fraction: share of train_val patients moved to val.
        seed: seed of the val carve-out.
        views: keep only these ``View Position`` values (``PA``/``AP``); None keeps all.
        on_missing: ``"drop"`` (counted) or ``"raise"`` for image files missing on disk.
    """
    check_on_missing(on_missing)
    if split not in ("official", "none"):
        raise ValueError(f"split must be 'official' or 'none', got {split!r}")
    entry_path = find_file(root, ENTRY_FILES, "NIH ChestX-ray14 label CSV")
    entries = read_table(entry_path, (IMAGE_INDEX, FINDING_LABELS, PATIENT_ID))
    dropped: dict[str, int] = {}
    if views is not None:
        keep = entries[VIEW].isin(list(views))
        dropped["other_view"] = int((~keep).sum())
        entries = entries.loc[keep].reset_index(drop=True)
    index = index_images(root)
    names = entries[IMAGE_INDEX].astype(str)
    df = pd.DataFrame({
        C.ID: names.to_numpy(),
        C.PATH: [str(index.get(n, root / "images" / n)) for n in names],
        C.PATIENT: entries[PATIENT_ID].astype(str).to_numpy(),
    })
    if VIEW in entries.columns:
        df[VIEW] = entries[VIEW].astype(str).to_numpy()
    labels = parse_finding_labels(entries[FINDING_LABELS])
    for k, finding in enumerate(NIH_FINDINGS):
        df[finding] = labels[:, k]
    if split == "official":
        df = _official_split(root, df, dropped, val_fraction, seed)
    df = drop_missing_files(df, on_missing, dropped)
    return finish_manifest(df, "nih_cxr14", dropped, **{ATTR_FINDINGS: list(NIH_FINDINGS)})


def read_list(path: Path) -> set[str]:
    """The image names of an official list file (one per line)."""
    require_file(path, "NIH ChestX-ray14 official split list")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _official_split(root: Path, df: pd.DataFrame, dropped: dict[str, int],
                    val_fraction: float, seed: int) -> pd.DataFrame:
    train_val, test = read_list(root / TRAIN_VAL_LIST), read_list(root / TEST_LIST)
    both = train_val & test
    if both:
        raise ValueError(f"{len(both)} image(s) are in both {TRAIN_VAL_LIST} and {TEST_LIST}, "
                         f"e.g. {sorted(both)[:3]}")
    split = np.where(df[C.ID].isin(test), "test",
                     np.where(df[C.ID].isin(train_val), "train", ""))
    listed = split != ""
    dropped["not_in_official_lists"] = int((~listed).sum())
    df = df.loc[listed].reset_index(drop=True).assign(**{C.SPLIT: split[listed]})
    df[C.SPLIT] = carve_validation(df, val_fraction, seed, list(NIH_FINDINGS)).to_numpy()
    return df

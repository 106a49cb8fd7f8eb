"""MIMIC-CXR-JPG v2 (Johnson et al., PhysioNet 2019): images, CheXpert labels, official split.

Layout (root = the ``mimic-cxr-jpg/2.x.x`` folder):

- ``mimic-cxr-2.0.0-metadata.csv[.gz]``: one row per image: ``dicom_id``, ``subject_id``,
  ``study_id``, ``ViewPosition`` (PA, AP, LATERAL, ...), ``Rows``, ``Columns``, ...;
- ``mimic-cxr-2.0.0-chexpert.csv[.gz]``: one row per STUDY (``subject_id``, ``study_id``) and 14
  findings with 1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned;
- ``mimic-cxr-2.0.0-split.csv[.gz]``: ``dicom_id``, ``study_id``, ``subject_id``, ``split`` in
  train / validate / test (patient-disjoint; ``validate`` becomes ``val`` here);
- images ``files/p<first 2 digits of subject>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medmask import columns as C
from medmask.data.manifest import (
    ATTR_FINDINGS,
    check_on_missing,
    drop_missing_files,
    find_file,
    finish_manifest,
    read_table,
)

PREFIX = "mimic-cxr-2.0.0"
CHEXPERT_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)
UNCERTAIN_POLICIES = {"keep": -1.0, "zeros": 0.0, "ones": 1.0}
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
VIEW_POSITION, STUDY = "ViewPosition", "study_id"


def image_path(root: Path, subject_id: int | str, study_id: int | str, dicom_id: str) -> Path:
    """``files/p<NN>/p<subject>/s<study>/<dicom_id>.jpg`` under ``root``."""
    subject = str(subject_id)
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}" / f"{dicom_id}.jpg"


def read_metadata(root: Path) -> pd.DataFrame:
    """The metadata CSV with ``path`` and ``patient_id`` added."""
    path = find_file(root, [f"{PREFIX}-metadata.csv", f"{PREFIX}-metadata.csv.gz"],
                     "MIMIC-CXR-JPG metadata CSV")
    meta = read_table(path, ("dicom_id", "subject_id", STUDY), dtype={"dicom_id": str})
    meta[C.PATH] = [str(image_path(root, s, t, d)) for s, t, d in
                    zip(meta["subject_id"], meta[STUDY], meta["dicom_id"], strict=True)]
    meta[C.PATIENT] = meta["subject_id"].astype(str)
    return meta


def load_mimic_cxr(
    root: Path,
    *,
    views: Sequence[str] | None = None,
    uncertain: str = "keep",
    on_missing: str = "drop",
    labels: bool = True,
    split: bool = True,
) -> pd.DataFrame:
    """One row per image with the study's CheXpert labels and the official split.

    Args:
        root: the MIMIC-CXR-JPG root.
        views: keep only these ``ViewPosition`` values (e.g. ``("PA", "AP")``); None keeps all.
        uncertain: what -1 (uncertain) becomes: ``"keep"`` (-1), ``"zeros"`` or ``"ones"``.
        on_missing: ``"drop"`` (counted) or ``"raise"`` for image files missing on disk.
        labels: join ``-chexpert.csv`` (required when True).
        split: join ``-split.csv`` (required when True).

    Returns:
        the manifest; the findings are float columns named as in the CSV (NaN = blank),
        listed in ``attrs["findings"]``; studies without a label row are counted in
        ``attrs["unlabeled"]`` and keep NaN labels.
    """
    check_on_missing(on_missing)
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {sorted(UNCERTAIN_POLICIES)}, "
                         f"got {uncertain!r}")
    dropped: dict[str, int] = {}
    df = read_metadata(root)
    if views is not None:
        keep = df[VIEW_POSITION].isin(list(views)) if VIEW_POSITION in df.columns else None
        if keep is None:
            raise ValueError(f"views= needs a '{VIEW_POSITION}' column in the metadata CSV")
        dropped["other_view"] = int((~keep).sum())
        df = df.loc[keep]
    df = df.rename(columns={"dicom_id": C.ID})
    findings: list[str] = []
    unlabeled = 0
    if labels:
        df, findings, unlabeled = _join_labels(root, df, UNCERTAIN_POLICIES[uncertain])
    if split:
        df = _join_split(root, df, dropped)
    columns = [C.ID, C.PATH, C.PATIENT, STUDY]
    columns += [c for c in (VIEW_POSITION, C.SPLIT) if c in df.columns] + findings
    df = drop_missing_files(df[columns].reset_index(drop=True), on_missing, dropped)
    return finish_manifest(df, "mimic_cxr", dropped, **{ATTR_FINDINGS: findings},
                           unlabeled=unlabeled, uncertain=uncertain)


def _join_labels(root: Path, df: pd.DataFrame, uncertain_value: float
                 ) -> tuple[pd.DataFrame, list[str], int]:
    path = find_file(root, [f"{PREFIX}-chexpert.csv", f"{PREFIX}-chexpert.csv.gz"],
                     "MIMIC-CXR-JPG CheXpert label CSV")
    table = read_table(path, ("subject_id", STUDY))
    findings = [c for c in CHEXPERT_FINDINGS if c in table.columns]
    if not findings:
        raise ValueError(f"{path} has none of the CheXpert findings {CHEXPERT_FINDINGS}")
    values = table[findings].to_numpy(dtype=float)
    values[values == -1.0] = uncertain_value
    table = pd.DataFrame(values, columns=findings).assign(**{STUDY: table[STUDY].to_numpy()})
    merged = df.merge(table.drop_duplicates(STUDY), on=STUDY, how="left", indicator=True)
    unlabeled = int((merged.pop("_merge") == "left_only").sum())
    return merged, findings, unlabeled


def _join_split(root: Path, df: pd.DataFrame, dropped: dict[str, int]) -> pd.DataFrame:
    path = find_file(root, [f"{PREFIX}-split.csv", f"{PREFIX}-split.csv.gz"],
                     "MIMIC-CXR-JPG split CSV")
    table = read_table(path, ("dicom_id", "split"), dtype={"dicom_id": str})
    unknown = sorted(set(table["split"].astype(str)) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"{path}: split values must be in {sorted(SPLIT_NAMES)}, got {unknown}")
    mapping = dict(zip(table["dicom_id"], table["split"].map(SPLIT_NAMES), strict=True))
    split = df[C.ID].map(mapping)
    listed = split.notna().to_numpy()
    dropped["not_in_split"] = int((~listed).sum())
    return df.loc[listed].assign(**{C.SPLIT: split[listed].to_numpy()})


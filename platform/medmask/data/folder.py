"""A generic manifest: a folder of class sub-folders, or a CSV with path and label columns.

- Folder mode: ``root/<class name>/<image files>`` (searched recursively inside each class
  folder); classes sorted by name unless ``classes=`` gives the order.
- CSV mode (``csv=``): a CSV with a path column (relative to the CSV's folder, or absolute)
  and optionally a label column (class names or integer codes), an id column, a patient column
  and a split column (values train/val/test).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_folder(
    root: Path,
    *,
    csv: str | Path | None = None,
    path_column: str = "path",
    label_column: str | None = "label",
    id_column: str | None = None,
    patient_column: str | None = None,
    split_column: str | None = None,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    on_missing: str = "drop",
    source: str = "folder",
) -> pd.DataFrame:
    """Manifest of a class-folder tree (default) or of a CSV (``csv=``, relative to ``root``).

    Args:
        root: the folder.
        csv: the CSV file; None = folder mode.
        path_column, label_column, id_column, patient_column, split_column: CSV column names
            (``label_column=None`` for unlabelled images; ids default to the path relative to
            the CSV's folder).
        classes: class order (label codes); default sorted names. In folder mode, only these
            sub-folders are read.
        extensions: image file extensions (folder mode).
        on_missing: ``"drop"`` (counted) or ``"raise"`` for CSV rows whose file is missing.
        source: the ``source`` value written to the manifest.
    """
    check_on_missing(on_missing)
    if csv is None:
        df = _scan_folders(Path(root), classes, extensions)
        class_names = sorted(df[C.LABEL_NAME].unique()) if classes is None else list(classes)
        dropped: dict[str, int] = {}
    else:
        df, class_names = _read_csv(Path(root), Path(csv), path_column, label_column, id_column,
                                    patient_column, split_column, classes)
        dropped = {}
        df = drop_missing_files(df, on_missing, dropped)
    if C.LABEL_NAME in df.columns:
        df[C.LABEL] = df[C.LABEL_NAME].map({n: k for k, n in enumerate(class_names)}).astype(
            "int64")
    return finish_manifest(df, source, dropped, **{ATTR_CLASSES: class_names})


def _scan_folders(root: Path, classes: Sequence[str] | None,
                  extensions: Sequence[str]) -> pd.DataFrame:
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if classes is None else [
        root / name for name in classes]
    if not folders:
        raise ValueError(f"no class sub-folders in {root} (expected root/<class>/<images>)")
    suffixes = {e.lower() for e in extensions}
    rows = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"class folder not found (expected a folder): {folder}")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"class folder {folder} has no image files {sorted(suffixes)}")
        rows += [(str(p.relative_to(root)), str(p), folder.name) for p in files]
    df = pd.DataFrame(rows, columns=[C.ID, C.PATH, C.LABEL_NAME])
    df[C.PATIENT] = df[C.ID]
    return df


def _read_csv(root: Path, csv: Path, path_column: str, label_column: str | None,
              id_column: str | None, patient_column: str | None, split_column: str | None,
              classes: Sequence[str] | None) -> tuple[pd.DataFrame, list[str]]:
    csv = require_file(csv if csv.is_absolute() else root / csv, "manifest CSV")
    required = [c for c in (path_column, label_column, id_column, patient_column, split_column)
                if c is not None]
    table = read_table(csv, required)
    relative = table[path_column].astype(str)
    paths = [str(p if Path(p).is_absolute() else csv.parent / p) for p in relative]
    df = pd.DataFrame({C.ID: (table[id_column] if id_column else relative).astype(str).to_numpy(),
                       C.PATH: paths})
    df[C.PATIENT] = (table[patient_column] if patient_column else df[C.ID]).astype(str).to_numpy()
    if split_column:
        df[C.SPLIT] = table[split_column].astype(str).to_numpy()
    class_names: list[str] = []
    if label_column:
        labels = table[label_column]
        if labels.isna().any():
            raise ValueError(f"{csv}: column '{label_column}' has blank labels in rows "
                             f"{np.flatnonzero(labels.isna().to_numpy())[:5].tolist()}")
        names = labels.astype(str)
        if pd.api.types.is_integer_dtype(labels) and classes is None:
            class_names = [str(v) for v in range(int(labels.max()) + 1)]
        else:
            class_names = sorted(names.unique()) if classes is None else list(classes)
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise ValueError(f"{csv}: labels {unknown} not in classes {class_names}")
        df[C.LABEL_NAME] = names.to_numpy()
    return df, class_names

"""Manifests: one pandas DataFrame per dataset, one row per image, saved as parquet.

``load_manifest(name, root, **options)`` reads a dataset's published on-disk layout through the
adapter registered under ``name`` (the same names as the Hydra ``data=`` group) and checks the
result against the manifest schema:

- always ``id`` (unique str), ``path`` (absolute image path), ``source``;
- ``patient_id`` where the dataset knows patients, ``split`` (train/val/test) where it defines one;
- single-label sets: ``label`` (int) and ``label_name`` (str); multi-label sets: one float column
  per finding (1, 0, NaN blank, -1 uncertain where the source has it), listed in
  ``df.attrs["findings"]``;
- ``df.attrs["dropped"]``: ``{reason: count}`` of rows left out (missing image files, low-quality
  masks, ...): nothing is dropped silently.

Adapters are imported lazily so that ``import medmask.data`` stays light.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.registry import Registry

log = logging.getLogger(__name__)

ManifestLoader = Callable[..., pd.DataFrame]

# Dataset adapters, by the names of the Hydra ``data=`` group: "module:function" entries,
# imported on first use.
DATASET_ADAPTERS: Registry[ManifestLoader] = Registry("dataset")
for _name, _target in {
    "covid_radiography": "medmask.data.covid_radiography:load_covid_radiography",
    "chexmask": "medmask.data.chexmask:load_chexmask",
    "nih_cxr14": "medmask.data.nih_cxr14:load_nih_cxr14",
    "eyegaze": "medmask.data.eyegaze:load_eyegaze",
    "mimic_cxr": "medmask.data.mimic_cxr:load_mimic_cxr",
    "folder": "medmask.data.folder:load_folder",
    "lgg_slices": "medmask.data.lgg:load_lgg_slices",
    "nifti_volumes": "medmask.data.nifti:load_nifti_volumes",
}.items():
    DATASET_ADAPTERS.add_lazy(_name, _target)

ATTR_SOURCE = "source"
ATTR_FINDINGS = "findings"
ATTR_DROPPED = "dropped"
ATTR_CLASSES = "classes"
ON_MISSING = ("drop", "raise")
_PARQUET_ATTRS_KEY = b"medmask.attrs"


def list_manifest_loaders() -> list[str]:
    """The dataset names ``load_manifest`` accepts."""
    return DATASET_ADAPTERS.names()


def register_manifest_loader(name: str, target: str) -> None:
    """Register an adapter as ``"module:function"`` (imported on first use)."""
    DATASET_ADAPTERS.add_lazy(name, target)


def load_manifest(name: str, root: str | Path, **options: Any) -> pd.DataFrame:
    """Read dataset ``name`` from ``root`` into a checked manifest.

    Args:
        name: one of :func:`list_manifest_loaders`.
        root: the dataset's folder in its published layout.
        **options: adapter options (see each adapter's docstring).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones) or a malformed dataset.
        FileNotFoundError: ``root`` or a file the layout requires is missing.
    """
    loader = DATASET_ADAPTERS.get(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root for {name!r} not found (expected a folder): {root}")
    manifest = loader(root, **options)
    check_manifest(manifest)
    return manifest


def check_manifest(df: pd.DataFrame) -> None:
    """Raise ``ValueError`` unless ``df`` follows the manifest schema (see module docstring)."""
    missing = [c for c in (C.ID, C.PATH, C.SOURCE) if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}; it has {list(df.columns)}")
    duplicated = df[C.ID][df[C.ID].duplicated()]
    if len(duplicated):
        raise ValueError(f"manifest ids are not unique, e.g. {duplicated.iloc[:3].tolist()}")
    if df[C.PATH].isna().any() or (df[C.PATH].astype(str) == "").any():
        raise ValueError("manifest has rows without a path")
    if C.SPLIT in df.columns:
        bad = sorted(set(df[C.SPLIT].dropna().astype(str)) - set(C.SPLITS))
        if bad:
            raise ValueError(f"manifest splits must be in {C.SPLITS}, got {bad}")
    if C.LABEL in df.columns and not pd.api.types.is_integer_dtype(df[C.LABEL]):
        raise ValueError(f"manifest column '{C.LABEL}' must be integer, got {df[C.LABEL].dtype}")
    for finding in df.attrs.get(ATTR_FINDINGS, []):
        if finding not in df.columns:
            raise ValueError(f"finding {finding!r} listed in attrs but not a manifest column")
        values = df[finding].to_numpy(dtype=float)
        bad_values = set(np.unique(values[~np.isnan(values)])) - {-1.0, 0.0, 1.0}
        if bad_values:
            raise ValueError(f"finding {finding!r} has values {sorted(bad_values)}, "
                             "expected 1, 0, -1 or blank")


def save_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` (with its ``attrs``) to a parquet file; returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[_PARQUET_ATTRS_KEY] = json.dumps(df.attrs, default=_jsonable).encode()
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by :func:`save_manifest`, ``attrs`` included, and check it."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest parquet file not found: {path}")
    table = pq.read_table(path)
    df = table.to_pandas()
    raw = (table.schema.metadata or {}).get(_PARQUET_ATTRS_KEY)
    df.attrs = json.loads(raw) if raw else {}
    check_manifest(df)
    return df


# --- helpers shared by the adapters ------------------------------------------------------


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else ``FileNotFoundError`` naming it and what it should be."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else ``FileNotFoundError`` naming it and what it should be."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found (expected a folder): {path}")
    return path


def find_file(root: Path, names: Iterable[str], what: str) -> Path:
    """The first of ``names`` (e.g. ``x.csv``, ``x.csv.gz``) that exists under ``root``."""
    names = list(names)
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{what} not found in {root}: expected one of {names}")


def read_table(path: Path, required: Iterable[str], **read_options: Any) -> pd.DataFrame:
    """Read a CSV (``.csv`` or ``.csv.gz``) and check that it has the ``required`` columns."""
    try:
        df = pd.read_csv(path, **read_options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot parse CSV {path}: {error}") from error
    require_columns(df, required, path)
    return df


def require_columns(df: pd.DataFrame, required: Iterable[str], path: Path | str) -> None:
    """``ValueError`` naming ``path`` and the missing columns, if any."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; it has {list(df.columns)}")


def check_on_missing(on_missing: str) -> None:
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")


def drop_missing_files(
    df: pd.DataFrame, on_missing: str, dropped: dict[str, int], what: str = "image"
) -> pd.DataFrame:
    """Drop rows whose ``path`` does not exist (counted in ``dropped``) or raise.

    Args:
        df: rows with a ``path`` column.
        on_missing: ``"drop"`` (counted, logged) or ``"raise"`` (``FileNotFoundError``
            naming the first missing files).
        dropped: the manifest's ``{reason: count}``; the count goes under ``f"missing_{what}"``.
    """
    check_on_missing(on_missing)
    exists = np.fromiter((Path(p).is_file() for p in df[C.PATH]), bool, len(df))
    if exists.all():
        return df
    missing = df.loc[~exists, C.PATH].tolist()
    if on_missing == "raise":
        raise FileNotFoundError(f"{len(missing)} {what} file(s) listed but missing on disk, "
                                f"e.g. {missing[:3]} (pass on_missing='drop' to skip them)")
    log.warning("dropped %d row(s) whose %s file is missing, e.g. %s", len(missing), what,
                missing[:3])
    dropped[f"missing_{what}"] = dropped.get(f"missing_{what}", 0) + len(missing)
    return df.loc[exists].reset_index(drop=True)


def finish_manifest(
    df: pd.DataFrame,
    source: str,
    dropped: Mapping[str, int],
    **attrs: Any,
) -> pd.DataFrame:
    """Reset the index, set ``source`` and the ``attrs`` every manifest carries."""
    df = df.reset_index(drop=True)
    df[C.SOURCE] = source
    df.attrs = {ATTR_SOURCE: source, ATTR_DROPPED: dict(dropped), **attrs}
    return df


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray | tuple | set):
        return list(value)
    return str(value)

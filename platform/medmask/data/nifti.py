"""NIfTI volumes in the Medical Segmentation Decathlon layout, sliced to 2-D.

Layout (Simpson et al. 2019, e.g. ``Task01_BrainTumour``):

- ``imagesTr/<case>.nii.gz``: 3-D volumes (X, Y, Z), or 4-D multi-modal ones (X, Y, Z, M):
  ``channel`` picks the modality (Task01: 0 = FLAIR, see ``dataset.json["modality"]``);
- ``labelsTr/<case>.nii.gz``: 3-D integer label volumes (0 background) of the same X, Y, Z;
- optional ``dataset.json``: when present its ``training`` list (``./imagesTr/...``,
  ``./labelsTr/...``) gives the pairs, and its ``labels``/``modality`` maps go to ``attrs``;
  without it, images pair with the label file of the same name;
- ``imagesTs/`` (no labels) is not read. Files whose name starts with ``._`` (macOS resource
  forks shipped inside the Decathlon tarballs) are ignored and counted
  (``attrs["ignored_files"]``).

Representation: one row per (volume, slice index) along the last spatial axis (Z), the image
and label volume paths and ``slice_index``; the decode stage
(:class:`~medmask.data.slices.DecodeSlices`) reads the slices, one slab per volume per batch.
A slice is H x W = X x Y in array order (no reorientation). ``id`` is ``<case>_z<k:03d>``, and
each volume is its own patient (the Decathlon publishes no patient ids), so patient-level
splits never put two slices of a volume in two splits.

Target: label values in ``target_labels`` (None: any label > 0, e.g. the whole tumour of
Task01); the same rule removes slices without target (``drop_empty``, counted as
``attrs["dropped"]["no_target"]`` with ``attrs["slices_total"]``, as the AHM paper removes
them) and builds the ``lesion`` map. The label volumes are read once here to find those
slices; image headers are read to check shapes. Unreadable or mismatched files raise an error
naming the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.imageio import ImageReadError
from medmask.data.manifest import check_on_missing, finish_manifest, require_dir
from medmask.data.slices import (
    ATTR_NORMALIZE,
    ATTR_SLICES_TOTAL,
    ATTR_TARGET_LABELS,
    ATTR_ZSCORE_CLIP,
    DROPPED_NO_TARGET,
    check_normalize,
    is_nifti,
    is_target,
    load_nifti,
    nifti_stem,
)

log = logging.getLogger(__name__)

IMAGES, LABELS, DATASET_JSON = "imagesTr", "labelsTr", "dataset.json"
VOLUME = "volume"


def load_nifti_volumes(
    root: Path,
    *,
    channel: int = 0,
    target_labels: Sequence[int] | None = None,
    drop_empty: bool = True,
    normalize: str = "zscore",
    zscore_clip: float = 3.0,
    use_dataset_json: bool = True,
    on_missing: str = "drop",
) -> pd.DataFrame:
    """One row per (volume, slice) with the label volume as lesion source (module docstring).

    Args:
        root: the task folder holding ``imagesTr/`` and ``labelsTr/``.
        channel: the modality read from 4-D images (ignored for 3-D ones).
        target_labels: label values that count as lesion; None = any value > 0.
        drop_empty: remove slices without target (counted as ``no_target``).
        normalize, zscore_clip: the decode stage's normalization (:mod:`medmask.data.slices`).
        use_dataset_json: pair files by ``dataset.json``'s ``training`` list when it exists.
        on_missing: ``"drop"`` (count ``missing_label``) or ``"raise"`` for an image without
            its label volume (or a listed file missing).

    Raises:
        FileNotFoundError: missing folders, or missing files with ``on_missing="raise"``.
        ValueError: a malformed ``dataset.json``, or image/label shapes that differ (named).
        ImageReadError: an unreadable NIfTI file (named).
    """
    check_on_missing(on_missing)
    check_normalize(normalize, zscore_clip)
    root = Path(root)
    require_dir(root / IMAGES, f"Decathlon images folder '{IMAGES}'")
    require_dir(root / LABELS, f"Decathlon labels folder '{LABELS}'")
    meta = _read_dataset_json(root / DATASET_JSON) if use_dataset_json else {}
    pairs, ignored = _pairs(root, meta)
    dropped: dict[str, int] = {}
    has_label = np.array([label.is_file() for _, label in pairs], bool)
    if not has_label.all():
        missing = [str(label) for (_, label), ok in zip(pairs, has_label, strict=True) if not ok]
        if on_missing == "raise":
            raise FileNotFoundError(f"{len(missing)} Decathlon label volume(s) missing, e.g. "
                                    f"{missing[:3]}")
        log.warning("dropped %d volume(s) without label file, e.g. %s", len(missing),
                    missing[:3])
        dropped["missing_label"] = len(missing)
        pairs = [p for p, ok in zip(pairs, has_label, strict=True) if ok]
    frames = [_volume_rows(image, label, channel, target_labels) for image, label in pairs]
    if not frames:
        raise FileNotFoundError(f"no labelled NIfTI volumes under {root / IMAGES}")
    df = pd.concat(frames, ignore_index=True)
    total = len(df)
    if drop_empty:
        dropped[DROPPED_NO_TARGET] = int((~df["_has_target"]).sum())
        df = df.loc[df["_has_target"]]
        log.info("Decathlon: kept %d of %d slices of %d volumes (%d without target removed)",
                 len(df), total, len(frames), dropped[DROPPED_NO_TARGET])
    df = df.drop(columns="_has_target")
    if df.empty:
        raise ValueError(f"no slice with target labels {target_labels or '> 0'} under {root}")
    attrs: dict[str, Any] = {
        ATTR_NORMALIZE: normalize, ATTR_ZSCORE_CLIP: float(zscore_clip),
        ATTR_TARGET_LABELS: None if target_labels is None else [int(v) for v in target_labels],
        ATTR_SLICES_TOTAL: total, "ignored_files": ignored, "volumes": len(frames),
    }
    for key in ("name", "labels", "modality"):
        if key in meta:
            attrs[f"decathlon_{key}"] = meta[key]
    return finish_manifest(df, "nifti_volumes", dropped, **attrs)


def _read_dataset_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot parse {path}: {error}") from error
    if not isinstance(meta, dict) or not isinstance(meta.get("training", []), list):
        raise ValueError(f"{path}: expected an object with a 'training' list")
    return meta


def _pairs(root: Path, meta: dict[str, Any]) -> tuple[list[tuple[Path, Path]], int]:
    """(image, label) paths from ``dataset.json`` or by file name; and the ``._`` files."""
    files = sorted(p for p in (root / IMAGES).iterdir() if is_nifti(p))
    ignored = sum(p.name.startswith("._") for p in files)
    ignored += sum(p.name.startswith("._") for p in (root / LABELS).iterdir())
    if meta.get("training"):
        pairs = []
        for entry in meta["training"]:
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise ValueError(f"{root / DATASET_JSON}: training entries need 'image' and "
                                 f"'label', got {entry!r}")
            image = root / entry["image"]
            if not image.is_file():
                raise FileNotFoundError(f"image listed in {root / DATASET_JSON} not found: "
                                        f"{image}")
            pairs.append((image, root / entry["label"]))
        return pairs, ignored
    images = [p for p in files if not p.name.startswith("._")]
    if not images:
        raise FileNotFoundError(f"no NIfTI images (*.nii.gz, *.nii) in {root / IMAGES}")
    return [(p, root / LABELS / p.name) for p in images], ignored


def _volume_rows(image_path: Path, label_path: Path, channel: int,
                 target_labels: Sequence[int] | None) -> pd.DataFrame:
    """The slices of one volume, with whether each has a target pixel."""
    image_shape = load_nifti(image_path).shape
    label_image = load_nifti(label_path)
    if len(image_shape) not in (3, 4):
        raise ValueError(f"NIfTI image {image_path} has shape {image_shape}, expected 3-D "
                         "(X, Y, Z) or 4-D (X, Y, Z, modality)")
    if tuple(image_shape[:3]) != tuple(label_image.shape):
        raise ValueError(f"label volume {label_path} has shape {label_image.shape}, but its "
                         f"image {image_path} has {image_shape} (expected the same X, Y, Z)")
    if len(image_shape) == 4 and not 0 <= channel < image_shape[3]:
        raise ValueError(f"NIfTI image {image_path} has {image_shape[3]} modalities, "
                         f"channel {channel} asked for")
    try:
        labels = np.asanyarray(label_image.dataobj)
    except Exception as error:  # truncated gzip (EOFError), bad data (ValueError), ...
        raise ImageReadError(f"cannot read NIfTI data of {label_path} (unreadable or "
                             f"truncated): {error}") from error
    depth = labels.shape[2]
    has_target = is_target(labels, target_labels).reshape(-1, depth).any(0)
    stem = nifti_stem(image_path)
    index = np.arange(depth, dtype=np.int64)
    return pd.DataFrame({
        C.ID: [f"{stem}_z{k:03d}" for k in index],
        C.PATH: str(image_path),
        C.LESION_PATH: str(label_path),
        C.SLICE_INDEX: index,
        C.IMAGE_CHANNEL: np.int64(channel if len(image_shape) == 4 else -1),
        C.PATIENT: stem,
        VOLUME: stem,
        "_has_target": has_target,
    })

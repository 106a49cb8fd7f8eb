"""LGG FLAIR segmentation slices (Buda et al. 2019; Kaggle "lgg-mri-segmentation").

Layout (root = ``kaggle_3m``, or a parent holding ``kaggle_3m`` or
``lgg-mri-segmentation/kaggle_3m``):

- one folder per case ``<case>/`` (110 cases, e.g. ``TCGA_CS_4941_19960909``: TCGA patient
  ``TCGA_CS_4941``, scan date ``19960909``), holding slices ``<case>_<n>.tif`` (n from 1) and
  their lesion masks ``<case>_<n>_mask.tif``; ``data.csv`` and ``README.md`` beside them are not
  read;
- images: 256 x 256 TIFF, 3 channels stored as RGB = (pre-contrast, FLAIR, post-contrast)
  (the dataset's README; where a case lacked a sequence, FLAIR was copied into its channel);
  the adapter reads the FLAIR channel, ``channel=1``: the middle (green) channel, which is the
  middle one in RGB and in OpenCV's BGR order alike;
- masks: single-channel 0/255 TIFF (FLAIR abnormality), 1 = target after decoding.

One row per slice: ``id`` (the file stem, ``TCGA_CS_4941_19960909_12``), ``path``,
``lesion_path``, ``image_channel``, ``patient_id`` (the ``TCGA_XX_NNNN`` part of the case; a
case folder not named like that is its own patient), ``case``, ``slice`` (n). As in the AHM
paper, slices whose mask has no target pixel are removed (``drop_empty=True``): the mask files
are read once here, and the count goes to ``attrs["dropped"]["no_target"]`` (with
``attrs["slices_total"]``), never silently. A slice without its mask file is dropped and counted
(``missing_mask``) or raises (``on_missing="raise"``); an unreadable mask raises
:class:`~medmask.data.imageio.ImageReadError` naming the file; unreadable images surface in the
decode stage (``on_bad_image``). Images are z-scored per slice by the decode stage
(:mod:`medmask.data.slices`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.imageio import read_mask
from medmask.data.manifest import check_on_missing, finish_manifest, require_dir
from medmask.data.slices import (
    ATTR_NORMALIZE,
    ATTR_SLICES_TOTAL,
    ATTR_TARGET_LABELS,
    ATTR_ZSCORE_CLIP,
    DROPPED_NO_TARGET,
    check_normalize,
)

log = logging.getLogger(__name__)

DATASET_FOLDERS = ("kaggle_3m", "lgg-mri-segmentation/kaggle_3m")
FLAIR_CHANNEL = 1  # RGB = (pre-contrast, FLAIR, post-contrast)
CASE = "case"
SLICE = "slice"
MASK_SUFFIX = "_mask"
_SLICE_NAME = re.compile(r"^(?P<case>.+)_(?P<n>\d+)\.tiff?$", re.IGNORECASE)
_TCGA_PATIENT = re.compile(r"^(TCGA_[A-Z0-9]{2}_[A-Z0-9]{4})_\d+$", re.IGNORECASE)


def load_lgg_slices(
    root: Path,
    *,
    channel: int = FLAIR_CHANNEL,
    drop_empty: bool = True,
    normalize: str = "zscore",
    zscore_clip: float = 3.0,
    on_missing: str = "drop",
) -> pd.DataFrame:
    """One row per slice with its lesion mask (see the module docstring).

    Args:
        root: ``kaggle_3m`` (or a parent holding it).
        channel: the image channel to read, RGB order (1 = FLAIR).
        drop_empty: remove slices whose mask has no target pixel (counted as ``no_target``).
        normalize, zscore_clip: the decode stage's normalization (:mod:`medmask.data.slices`).
        on_missing: ``"drop"`` (count ``missing_mask``) or ``"raise"`` for a slice without mask.

    Raises:
        FileNotFoundError: no case folders, or a missing mask with ``on_missing="raise"``.
        ImageReadError: a mask file is unreadable (named).
    """
    check_on_missing(on_missing)
    check_normalize(normalize, zscore_clip)
    if channel not in (0, 1, 2):
        raise ValueError(f"channel must be 0, 1 or 2 (RGB order; 1 = FLAIR), got {channel}")
    root = _dataset_root(Path(root))
    df = _scan_cases(root)
    dropped: dict[str, int] = {}
    has_mask = np.fromiter((Path(p).is_file() for p in df[C.LESION_PATH]), bool, len(df))
    if not has_mask.all():
        missing = df.loc[~has_mask, C.LESION_PATH].tolist()
        if on_missing == "raise":
            raise FileNotFoundError(f"{len(missing)} LGG slice(s) have no mask file, e.g. "
                                    f"{missing[:3]} (expected <case>/<case>_<n>_mask.tif)")
        log.warning("dropped %d LGG slice(s) without a mask file, e.g. %s", len(missing),
                    missing[:3])
        dropped["missing_mask"] = len(missing)
        df = df.loc[has_mask]
    total = len(df)
    if drop_empty:
        has_target = np.fromiter((read_mask(p).any() for p in df[C.LESION_PATH]), bool, total)
        dropped[DROPPED_NO_TARGET] = int((~has_target).sum())
        df = df.loc[has_target]
        log.info("LGG: kept %d of %d slices (%d without target removed)", len(df), total,
                 dropped[DROPPED_NO_TARGET])
    if df.empty:
        raise ValueError(f"no LGG slice with a lesion mask left under {root} "
                         f"(dropped: {dropped})")
    df[C.IMAGE_CHANNEL] = np.int64(channel)
    return finish_manifest(df, "lgg_slices", dropped, **{
        ATTR_NORMALIZE: normalize, ATTR_ZSCORE_CLIP: float(zscore_clip),
        ATTR_TARGET_LABELS: None, ATTR_SLICES_TOTAL: total})


def patient_of_case(case: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941``; other names are their own patient."""
    match = _TCGA_PATIENT.match(case)
    return match.group(1) if match else case


def _dataset_root(root: Path) -> Path:
    for name in DATASET_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return root


def _scan_cases(root: Path) -> pd.DataFrame:
    cases = sorted(p for p in require_dir(root, "LGG dataset folder").iterdir() if p.is_dir())
    rows = []
    for case in cases:
        for path in case.iterdir():
            match = _SLICE_NAME.match(path.name)
            if match is None or match["case"] != case.name:  # masks end in _mask, not _<n>
                continue
            mask = path.with_name(f"{path.stem}{MASK_SUFFIX}{path.suffix}")
            rows.append((path.stem, str(path), str(mask), case.name, int(match["n"])))
    if not rows:
        raise FileNotFoundError(f"no LGG slices found under {root} "
                                "(expected <case>/<case>_<n>.tif with <case>_<n>_mask.tif)")
    df = pd.DataFrame(rows, columns=[C.ID, C.PATH, C.LESION_PATH, CASE, SLICE])
    df[C.PATIENT] = df[CASE].map(patient_of_case)
    df[SLICE] = df[SLICE].astype("int64")
    return df.sort_values([CASE, SLICE]).reset_index(drop=True)

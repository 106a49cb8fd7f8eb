"""Multi-label chest X-ray findings with organ maps, split train / val / test, in memory: the
data of the contour-overlay protocol (phantoms, or MIMIC-CXR-JPG with CheXmask masks).

Source of the protocol: "Anatomical Masking as Lightweight Visual Priors for Chest X-ray
Classification" (Sec. 4.1): MIMIC-CXR frontal views (PA / AP), 5 findings (Atelectasis,
Cardiomegaly, Consolidation, Edema, Pleural Effusion) as multi-label targets, only samples
with at least one positive, 224 px bicubic in [0, 1], lungs and heart from CheXmask.

- :func:`findings_splits` with ``name="phantom"``: benchmark phantoms of one seed; the
  training index range is split by image (a seeded permutation) into train and
  ``val_fraction`` validation, the test range follows it.
- ``name="mimic_cxr"``: :func:`~medmask.data.mimic_cxr.load_mimic_cxr` (frontal views,
  CheXpert labels kept raw: 1, 0, -1 uncertain, blank) joined on ``dicom_id`` with
  :func:`~medmask.data.chexmask.load_chexmask` (lungs and heart as RLE, quality filter
  ``Dice RCA (Mean) >= min_dice``). Uncertain and blank labels become ``uncertain`` /
  ``blank`` (0 by default); every count (views dropped, no CheXmask row, low quality,
  uncertain and blank values per finding, images without a positive) is returned. Splits by
  patient: the official split (``validate`` -> ``val``) or a seeded, stratified
  patient-level split (``split="patient"``); no patient is in two splits (checked).
  Images decode at ``size`` px (bicubic, clipped to [0, 1]); masks resize nearest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data import phantom
from medmask.data.chexmask import load_chexmask
from medmask.data.decode import DecodeImages
from medmask.data.mimic_cxr import load_mimic_cxr
from medmask.data.splits import check_patient_disjoint, split_by_patient

log = logging.getLogger(__name__)

PAPER_FINDINGS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                                   "Pleural Effusion")
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
SOURCES = ("phantom", "mimic_cxr")
LABEL_MAPS = {"zeros": 0.0, "ones": 1.0}
SPLIT_MODES = ("official", "patient")
DECODE_CHUNK = 64


@dataclass(frozen=True)
class FindingsDataSettings:
    """Where the contour-overlay images come from and how they are split.

    Attributes:
        name: ``phantom`` or ``mimic_cxr``.
        size: image side in pixels (MIMIC: decoded bicubic at this side).
        seed: phantom seed; the seed of the validation carve-out and of a patient split.
        findings: the finding columns, in the order of ``labels``.
        val_fraction: phantoms: the share of the training images held out for validation (by
            image); MIMIC with ``split="patient"``: the validation share of the patients.
        variant, n_train, n_test: phantoms (the training range includes validation).
        root: the MIMIC-CXR-JPG root; chexmask_root: the CheXmask folder.
        chexmask_resolution: the CheXmask sub-folder (``OriginalResolution``).
        min_dice: CheXmask's quality filter (``Dice RCA (Mean)``), None keeps all.
        views: the ``ViewPosition`` values kept (frontal: PA and AP).
        uncertain, blank: what uncertain (-1) and blank labels become: ``zeros`` or ``ones``.
        split: ``official`` (MIMIC's split CSV) or ``patient`` (seeded, stratified).
        test_fraction: the test share of the patients with ``split="patient"``.
        max_images: at most this many images per split (a seeded subset; None: all).
        on_missing: image files missing on disk: ``drop`` (counted) or ``raise``.
        on_bad_image: unreadable image files: ``raise`` (naming the file) or ``flag``
            (dropped and counted).
    """

    name: str = "phantom"
    size: int = 64
    seed: int = 0
    findings: tuple[str, ...] = PAPER_FINDINGS
    val_fraction: float = 0.2
    variant: str = phantom.BENCHMARK
    n_train: int = 768
    n_test: int = 512
    root: str | None = None
    chexmask_root: str | None = None
    chexmask_resolution: str = "OriginalResolution"
    min_dice: float | None = 0.7
    views: tuple[str, ...] = FRONTAL_VIEWS
    uncertain: str = "zeros"
    blank: str = "zeros"
    split: str = "official"
    test_fraction: float = 0.2
    max_images: int | None = None
    on_missing: str = "drop"
    on_bad_image: str = "raise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", tuple(self.findings))
        object.__setattr__(self, "views", tuple(self.views))
        if self.name not in SOURCES:
            raise ValueError(f"the contour-overlay data must be one of {SOURCES}, got "
                             f"{self.name!r}")
        for key in ("uncertain", "blank"):
            if getattr(self, key) not in LABEL_MAPS:
                raise ValueError(f"{key} must be one of {sorted(LABEL_MAPS)}, got "
                                 f"{getattr(self, key)!r}")
        if self.split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}, got {self.split!r}")
        if not 0.0 < float(self.val_fraction) < 1.0 or not 0.0 < float(self.test_fraction) < 1.0 \
                or float(self.val_fraction) + float(self.test_fraction) >= 1.0:
            raise ValueError(f"need 0 < val_fraction, test_fraction and their sum < 1, got "
                             f"{self.val_fraction}, {self.test_fraction}")
        if self.name == "mimic_cxr":
            for key in ("root", "chexmask_root"):
                if getattr(self, key) in (None, "", "???"):
                    raise ValueError(f"MIMIC-CXR with CheXmask needs {key} (the "
                                     f"{'MIMIC-CXR-JPG' if key == 'root' else 'CheXmask'} "
                                     f"folder), got {getattr(self, key)!r}")


@dataclass(frozen=True)
class FindingsSplits:
    """The ``train``, ``val`` and ``test`` columns (``id``, ``patient_id``, ``image`` [N, S, S]
    float32 in [0, 1], ``organs`` [N, S, S] uint8, ``labels`` [N, K] float32) and the counts
    of what was read, mapped and dropped."""

    splits: dict[str, dict[str, np.ndarray]]
    counts: dict[str, float] = field(default_factory=dict)

    def split(self, name: str) -> dict[str, np.ndarray]:
        if name not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)}, got {name!r}")
        return self.splits[name]

    def batches(self, name: str, batch_size: int = 64,
                keys: Sequence[str] = (C.IMAGE, C.ORGANS, C.LABELS)
                ) -> Iterator[dict[str, np.ndarray]]:
        """The split as batches of ``keys``."""
        rows = self.split(name)
        for lo in range(0, len(rows[C.IMAGE]), batch_size):
            yield {k: rows[k][lo:lo + batch_size] for k in keys}


def findings_splits(settings: FindingsDataSettings, progress: Any = None) -> FindingsSplits:
    """The splits of ``settings`` (module docstring); ``progress(n)`` is called as images
    decode (MIMIC)."""
    if settings.name == "phantom":
        return _phantom_splits(settings)
    return _mimic_splits(settings, progress)


def _phantom_splits(settings: FindingsDataSettings) -> FindingsSplits:
    rows = phantom.generate(settings.n_train + settings.n_test, settings.size, settings.seed,
                            variant=settings.variant)
    if C.LABELS not in rows:
        raise ValueError(f"phantom variant {settings.variant!r} has no findings (labels); "
                         "use the benchmark variant")
    n = len(rows[C.IMAGE])
    columns = {C.ID: np.asarray(rows[C.ID]).astype(str),
               C.PATIENT: np.asarray(rows[C.PATIENT]).astype(str),
               C.IMAGE: rows[C.IMAGE].astype(np.float32),
               C.ORGANS: rows[C.ORGANS].astype(np.uint8),
               C.LABELS: np.asarray(rows[C.LABELS], np.float32)}
    order = np.random.default_rng([settings.seed, 7]).permutation(settings.n_train)
    n_val = max(1, round(settings.val_fraction * settings.n_train))
    index = {"train": np.sort(order[n_val:]), "val": np.sort(order[:n_val]),
             "test": np.arange(settings.n_train, n)}
    splits = {s: {k: v[i] for k, v in columns.items()} for s, i in index.items()}
    return FindingsSplits(splits, {f"rows/{s}": float(len(i)) for s, i in index.items()})


def mimic_manifest(settings: FindingsDataSettings) -> tuple[pd.DataFrame, dict[str, float]]:
    """The frontal MIMIC-CXR images with a CheXmask row, their mapped finding labels, split
    by patient, only those with a positive finding; and the counts."""
    counts: dict[str, float] = {}
    root = Path(str(settings.root))
    mimic = load_mimic_cxr(root, views=list(settings.views), uncertain="keep",
                           on_missing=settings.on_missing, split=settings.split == "official")
    _count(counts, "mimic_dropped", mimic.attrs.get("dropped", {}))
    check_patient_disjoint(mimic)  # the official split, before any image is filtered out
    counts["mimic_unlabeled_images"] = float(mimic.attrs.get("unlabeled", 0))
    missing = [f for f in settings.findings if f not in mimic.columns]
    if missing:
        raise ValueError(f"{root}: the CheXpert label CSV lacks finding column(s) {missing}; "
                         f"it has {mimic.attrs.get('findings')}")
    masks = load_chexmask(Path(str(settings.chexmask_root)), source="MIMIC-CXR-JPG",
                          image_root=root, resolution=settings.chexmask_resolution,
                          min_dice=settings.min_dice, on_missing=settings.on_missing)
    _count(counts, "chexmask_dropped", masks.attrs.get("dropped", {}))
    duplicated = masks[C.ID].duplicated()
    if duplicated.any():
        raise ValueError(f"{masks.attrs.get('chexmask_csv')}: dicom_id(s) listed twice, e.g. "
                         f"{masks.loc[duplicated, C.ID].head(3).tolist()}")
    rle = [c for c in masks.columns if c not in (C.PATH, C.PATIENT, C.SOURCE)]
    df = mimic.merge(masks[rle], on=C.ID, how="inner")
    counts["dropped/no_chexmask"] = float(len(mimic) - len(df))
    labels = _mapped_labels(df, settings, counts)
    keep = labels.max(1) > 0.5
    counts["dropped/no_positive"] = float((~keep).sum())
    df = df.loc[keep].reset_index(drop=True)
    df[C.LABELS] = list(labels[keep])
    if settings.split == "patient":
        fractions = {"train": 1.0 - settings.val_fraction - settings.test_fraction,
                     "val": settings.val_fraction, "test": settings.test_fraction}
        df[C.SPLIT] = split_by_patient(df.assign(**dict(zip(
            settings.findings, labels[keep].T, strict=True))), fractions, settings.seed,
            list(settings.findings)).to_numpy()
    check_patient_disjoint(df)
    if settings.max_images is not None:
        df = _subsample(df, int(settings.max_images), settings.seed)
    for split in C.SPLITS:
        counts[f"rows/{split}"] = float((df[C.SPLIT] == split).sum())
    empty = [s for s in C.SPLITS if counts[f"rows/{s}"] == 0]
    if empty:
        raise ValueError(f"MIMIC-CXR with CheXmask: split(s) {empty} have no image with a "
                         f"positive finding and a CheXmask row (counts: {counts})")
    return df, counts


def _mimic_splits(settings: FindingsDataSettings, progress: Any) -> FindingsSplits:
    df, counts = mimic_manifest(settings)
    decode = DecodeImages(settings.size, settings.on_bad_image, interpolation="bicubic")
    splits = {}
    for split in C.SPLITS:
        part = df.loc[df[C.SPLIT] == split].reset_index(drop=True)
        chunks = []
        for lo in range(0, len(part), DECODE_CHUNK):
            batch = {k: part[k].to_numpy()[lo:lo + DECODE_CHUNK] for k in part.columns
                     if k != C.LABELS}
            out = decode(batch)
            chunks.append({k: out[k] for k in (C.IMAGE, C.ORGANS, C.BAD_IMAGE,
                                               C.MASK_RESIZED)})
            if progress is not None:
                progress(len(batch[C.ID]))
        columns = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        bad = columns.pop(C.BAD_IMAGE)
        counts[f"mask_resized/{split}"] = float(columns.pop(C.MASK_RESIZED).sum())
        counts[f"dropped/bad_image/{split}"] = float(bad.sum())
        if bad.any():
            log.warning("%s: %d unreadable image(s) dropped (on_bad_image=flag), e.g. %s",
                        split, int(bad.sum()), part.loc[bad, C.PATH].head(3).tolist())
        good = ~bad
        splits[split] = {C.ID: part[C.ID].to_numpy(str)[good],
                         C.PATIENT: part[C.PATIENT].to_numpy(str)[good],
                         C.IMAGE: columns[C.IMAGE][good], C.ORGANS: columns[C.ORGANS][good],
                         C.LABELS: np.stack(part[C.LABELS].to_numpy())[good].astype(np.float32)}
        counts[f"rows/{split}"] = float(good.sum())
    log.info("MIMIC-CXR with CheXmask: %s", counts)
    return FindingsSplits(splits, counts)


def _mapped_labels(df: pd.DataFrame, settings: FindingsDataSettings,
                   counts: dict[str, float]) -> np.ndarray:
    """[N, K] labels in {0, 1}: 1 positive, 0 negative, -1 -> ``uncertain``, blank ->
    ``blank``; the uncertain and blank values of each finding are counted."""
    values = df[list(settings.findings)].to_numpy(dtype=np.float64, copy=True)
    allowed = np.isnan(values) | np.isin(values, (-1.0, 0.0, 1.0))
    if not allowed.all():
        row, col = np.argwhere(~allowed)[0]
        raise ValueError(f"{settings.root}: CheXpert label {settings.findings[col]!r} of study "
                         f"{df['study_id'].iloc[row]} is {float(values[row, col])!r}; "
                         "expected 1, 0, -1 (uncertain) or blank")
    uncertain, blank = values == -1.0, np.isnan(values)
    for k, name in enumerate(settings.findings):
        counts[f"labels/{name}/uncertain"] = float(uncertain[:, k].sum())
        counts[f"labels/{name}/blank"] = float(blank[:, k].sum())
        counts[f"labels/{name}/positive"] = float((values[:, k] == 1.0).sum())
    values[uncertain] = LABEL_MAPS[settings.uncertain]
    values[blank] = LABEL_MAPS[settings.blank]
    return values.astype(np.float32)


def _subsample(df: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most ``limit`` images per split, a seeded subset (order kept)."""
    rng = np.random.default_rng([seed, 11])
    parts = []
    for split in C.SPLITS:
        index = np.flatnonzero((df[C.SPLIT] == split).to_numpy())
        if len(index) > limit:
            index = np.sort(rng.choice(index, limit, replace=False))
        parts.append(index)
    return df.iloc[np.concatenate(parts)].reset_index(drop=True)


def _count(counts: dict[str, float], prefix: str, values: Mapping[str, Any]) -> None:
    counts.update({f"{prefix}/{k}": float(v) for k, v in values.items()})

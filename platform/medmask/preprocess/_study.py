"""Train/val/test Ray datasets for a study, from any ``data`` config (phantoms or a manifest).

:func:`study_splits` is the one call the training studies make:

- ``data.name == "phantom"``: ``n_train``, ``n_val``, ``n_test`` phantoms of the study seed at
  ``size`` px, generated ``chunk`` at a time, the three splits disjoint consecutive index
  ranges of that one seed; an optional ``n_pool`` adds an unlabelled ``pool`` split (the
  next index range, after the test images: pretraining data, labels never read); an
  optional ``variant`` picks the phantom (``benchmark`` by default, ``classic``,
  ``confounded``: :mod:`medmask.data.phantom`);
- any other name: the manifest of :func:`~medmask.data.manifest.load_manifest` (``root`` and
  every key not in :data:`PIPELINE_KEYS` are adapter options), split by patient
  (:func:`~medmask.data.splits.split_by_patient`, stratified by label where the dataset has
  labels, seeded by the study seed) with ``split_fractions`` (default 0.8/0.1/0.1); a dataset
  that ships an official split (a ``split`` column) keeps it unless ``split_fractions`` is set.
  Each split is decoded and resized to ``size`` by
  :func:`~medmask.preprocess.manifest_dataset` (slice manifests: z-scored images and
  ``lesion`` maps, see :mod:`medmask.data.slices`); with ``segment_organs`` true, a dataset
  without organ maps gets the rule-based lungs (:class:`~medmask.preprocess.AddOrgans`,
  the segmentation-guided SSL guide's Otsu segmentation) as ``organs``.

The datasets carry ``id``, ``image`` (H x W float32), ``image_key`` (int64) and, where the
dataset has them, ``label`` (int64), ``labels`` (float32 multi-hot: finding > 0, so blank and
uncertain count as negative), ``organs``, ``lesion`` (uint8 {0, 1}), plus ``patient_id``,
``split`` and ``source`` (strings: the loops' ``train_view`` drops them). Rows the adapter
dropped (missing files, slices without target, ...) are in :func:`study_counts`; with
``on_bad_image: flag`` unreadable images are counted, logged and removed here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.chexmask import RLE_RIGHT_LUNG
from medmask.data.manifest import ATTR_DROPPED, load_manifest
from medmask.data.splits import DEFAULT_FRACTIONS, check_patient_disjoint, split_by_patient
from medmask.preprocess._pipeline import (
    AddOrgans,
    drop_flagged,
    manifest_dataset,
    map_stage,
    phantom_dataset,
    pipeline_counts,
)

log = logging.getLogger(__name__)

PHANTOM = "phantom"
# data-config keys the pipeline reads; every other key is an adapter option of load_manifest
PIPELINE_KEYS = ("name", "root", "size", "chunk", "on_bad_image", "limit", "split_fractions",
                 "segment_organs", "n", "n_train", "n_val", "n_test", "n_pool", "variant")
PHANTOM_KEYS = ("size", "chunk", "n_train", "n_val", "n_test")
STUDY_COLUMNS = (C.ID, C.PATIENT, C.IMAGE, C.IMAGE_KEY, C.LABEL, C.LABELS, C.ORGANS, C.LESION,
                 C.SPLIT, C.SOURCE)


def adapter_options(data: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a ``data`` config that go to the adapter (all but :data:`PIPELINE_KEYS`)."""
    return {k: v for k, v in data.items() if k not in PIPELINE_KEYS}


def study_splits(
    data: Mapping[str, Any],
    seed: int,
    *,
    batch_size: int = 32,
    num_cpus: float = 1.0,
    concurrency: int | None = None,
) -> dict[str, Any]:
    """``{"train", "val", "test"}`` -> lazy Ray datasets for the ``data`` config (module doc).

    Args:
        data: a ``configs/data/*.yaml`` group as a mapping (a DictConfig works).
        seed: the study seed: phantom seed, or the patient-split seed.
        batch_size: rows per decode task (manifests).
        num_cpus, concurrency: CPUs per Ray Data task and the cap on concurrent tasks.

    Raises:
        ValueError: missing config keys, an unset ``root``, bad fractions, or an empty split.
    """
    if data.get("name") == PHANTOM:
        return _phantom_splits(data, seed, num_cpus=num_cpus, concurrency=concurrency)
    manifest = study_manifest(data, seed)
    findings = list(manifest.attrs.get("findings", []))
    on_bad_image = str(data.get("on_bad_image", "raise"))
    datasets = {}
    for split in C.SPLITS:
        part = manifest.loc[manifest[C.SPLIT] == split].reset_index(drop=True)
        part.attrs = dict(manifest.attrs)
        dataset = manifest_dataset(part, int(data["size"]), on_bad_image, batch_size,
                                   num_cpus=num_cpus, concurrency=concurrency)
        if findings:
            dataset = map_stage(dataset, MultiHotLabels(findings), batch_size,
                                num_cpus=num_cpus, concurrency=concurrency)
        columns = _study_columns(part, findings)
        if data.get("segment_organs") and C.ORGANS not in columns:
            # the guide's rule-based lungs (Otsu, closing/opening, 2 largest components) where
            # the dataset ships no organ maps (NIH ChestX-ray14): what options 1-4 read
            dataset = map_stage(dataset, AddOrgans(), batch_size, num_cpus=num_cpus,
                                concurrency=concurrency)
            columns = [c for c in STUDY_COLUMNS if c in {*columns, C.ORGANS}]
        if on_bad_image == "flag":
            dataset = _drop_bad_images(dataset, split)
        datasets[split] = dataset.select_columns(columns)
    return datasets


def source_dataset(data: Mapping[str, Any], seed: int, *, batch_size: int = 32,
                   num_cpus: float = 1.0, concurrency: int | None = None
                   ) -> tuple[Any, dict[str, float]]:
    """One Ray dataset of every decoded image a ``data`` config names (no split), and the
    manifest's own counts of rows it dropped (``manifest_dropped_<reason>``).

    The front door of ``experiments/preprocess.py``: ``n`` phantoms of ``seed``, or the
    adapter's manifest (``limit`` rows at most) decoded at ``size`` px.
    """
    if data.get("name") == PHANTOM:
        variant = None if data.get("variant") is None else str(data["variant"])
        return phantom_dataset(int(data["n"]), int(data["size"]), seed, int(data["chunk"]),
                               variant=variant, num_cpus=num_cpus,
                               concurrency=concurrency), {}
    manifest = load_manifest(str(data["name"]), data.get("root"), **adapter_options(data))
    if data.get("limit"):
        manifest = manifest.head(int(data["limit"]))
    dropped = {f"manifest_dropped_{k}": float(v)
               for k, v in manifest.attrs.get(ATTR_DROPPED, {}).items()}
    return manifest_dataset(manifest, int(data["size"]), str(data.get("on_bad_image", "raise")),
                            batch_size, num_cpus=num_cpus, concurrency=concurrency), dropped


def study_manifest(data: Mapping[str, Any], seed: int) -> pd.DataFrame:
    """The manifest of a (non-phantom) ``data`` config with its ``split`` column (by patient).

    ``attrs`` keep the adapter's counts (``dropped``, ``slices_total``, ...) and gain
    ``split_counts`` (rows per split).
    """
    name, root = data.get("name"), data.get("root")
    if root in (None, "", "???"):
        raise ValueError(f"data.root must be set to the {name!r} dataset's folder, got {root!r}")
    manifest = load_manifest(str(name), root, **adapter_options(data))
    if data.get("limit"):
        manifest = manifest.head(int(data["limit"])).copy()
    fractions = data.get("split_fractions")
    if fractions is None and C.SPLIT in manifest.columns:
        log.info("%s: using the dataset's own split", name)
    else:
        fractions = _fractions(fractions)
        findings = list(manifest.attrs.get("findings", [])) or None
        manifest[C.SPLIT] = split_by_patient(manifest, fractions, seed, findings).to_numpy()
    check_patient_disjoint(manifest)
    counts = manifest[C.SPLIT].value_counts()
    empty = [s for s in C.SPLITS if counts.get(s, 0) == 0]
    if empty:
        raise ValueError(f"{name}: split(s) {empty} have no rows ({counts.to_dict()} of "
                         f"{len(manifest)} rows); use more data or other split_fractions")
    manifest.attrs["split_counts"] = {s: int(counts[s]) for s in C.SPLITS}
    log.info("%s: %s rows per split, dropped by the adapter: %s", name,
             manifest.attrs["split_counts"], manifest.attrs.get("dropped", {}))
    return manifest


def study_counts(manifest: pd.DataFrame) -> dict[str, float]:
    """Flat counts to log: ``rows/<split>``, ``dropped/<reason>``, ``slices_total``."""
    counts = {f"rows/{k}": float(v) for k, v in manifest.attrs.get("split_counts", {}).items()}
    counts.update({f"dropped/{k}": float(v)
                   for k, v in manifest.attrs.get("dropped", {}).items()})
    if "slices_total" in manifest.attrs:
        counts["slices_total"] = float(manifest.attrs["slices_total"])
    return counts


class MultiHotLabels:
    """Stage: finding columns (1, 0, -1 uncertain, NaN blank) -> ``labels`` float32 [B, K]
    (positive where > 0, the convention of :mod:`medmask.data.splits`)."""

    def __init__(self, findings: list[str]) -> None:
        self.findings = list(findings)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(batch)
        values = np.stack([np.asarray(batch[f], np.float64) for f in self.findings], 1)
        out[C.LABELS] = (np.nan_to_num(values) > 0).astype(np.float32)
        return out


def _phantom_splits(data: Mapping[str, Any], seed: int, *, num_cpus: float,
                    concurrency: int | None) -> dict[str, Any]:
    """Disjoint index ranges of one phantom seed (``phantom_splits`` of the MIM study)."""
    missing = [k for k in PHANTOM_KEYS if data.get(k) is None]
    if missing:
        raise ValueError(f"the phantom data config lacks {missing} (needs {list(PHANTOM_KEYS)})")
    sizes = {"train": int(data["n_train"]), "val": int(data["n_val"]),
             "test": int(data["n_test"])}
    if int(data.get("n_pool") or 0) > 0:
        sizes[C.POOL] = int(data["n_pool"])
    variant = None if data.get("variant") is None else str(data["variant"])
    datasets, start = {}, 0
    for split, n in sizes.items():
        datasets[split] = phantom_dataset(n, int(data["size"]), seed, int(data["chunk"]),
                                          start=start, variant=variant, num_cpus=num_cpus,
                                          concurrency=concurrency)
        start += n
    return datasets


def _fractions(fractions: Mapping[str, float] | None) -> dict[str, float]:
    chosen = {str(k): float(v) for k, v in (fractions or DEFAULT_FRACTIONS).items()}
    if sorted(chosen) != sorted(C.SPLITS):
        raise ValueError(f"split_fractions must name {list(C.SPLITS)}, got {sorted(chosen)}")
    if min(chosen.values()) <= 0 or not np.isclose(sum(chosen.values()), 1.0):
        raise ValueError(f"split_fractions must be > 0 and sum to 1, got {chosen}")
    return {s: chosen[s] for s in C.SPLITS}


def _study_columns(manifest: pd.DataFrame, findings: list[str]) -> list[str]:
    """The columns a decoded split of ``manifest`` has, among :data:`STUDY_COLUMNS`."""
    present = {*manifest.columns, C.IMAGE, C.IMAGE_KEY}
    if findings:
        present.add(C.LABELS)
    if C.ORGANS_PATH in manifest.columns or RLE_RIGHT_LUNG in manifest.columns:
        present.add(C.ORGANS)
    if C.LESION_PATH in manifest.columns:
        present.add(C.LESION)
    return [c for c in STUDY_COLUMNS if c in present]


def _drop_bad_images(dataset: Any, split: str) -> Any:
    """Materialize, count and log ``bad_image`` rows, then remove them."""
    dataset = dataset.materialize()
    bad = pipeline_counts(dataset).get(C.BAD_IMAGE, 0.0)
    if bad:
        log.warning("%s split: removed %d unreadable image(s) (on_bad_image=flag)", split, bad)
    return drop_flagged(dataset)

"""The preprocessing room: Ray Data stages that combine data, segmentation and masking.

Above :mod:`medmask.data` (which only reads datasets), :mod:`medmask.segmentation` and
:mod:`medmask.masking`: sources (phantoms generated in parallel, manifests decoded in
parallel), the organ stage, the mask stage with its counted fallbacks, and the study splits.

- :func:`study_splits`: train/val/test Ray datasets for any ``data`` config (the studies).
- :func:`source_dataset`, :func:`build_dataset`: one dataset -> organs -> validity -> masks
  (``experiments/preprocess.py``); :func:`pipeline_counts`, :func:`drop_flagged`.
- :func:`phantom_dataset`, :func:`manifest_dataset`, :func:`map_stage`: the building blocks
  (:func:`manifest_blocks`: how many Ray tasks a manifest is cut into, blocks of at least
  :data:`TASK_ROWS` rows).
- :func:`findings_splits` (:class:`FindingsDataSettings`, :class:`FindingsSplits`): the
  contour-overlay study's in-memory train / val / test splits (phantoms, or MIMIC-CXR with
  CheXmask; :mod:`medmask.data.findings`), re-exported for the rooms above this one.
"""

from medmask.data.findings import FindingsDataSettings, FindingsSplits, findings_splits
from medmask.preprocess._pipeline import (
    TASK_ROWS,
    AddOrgans,
    CropToLungs,
    GeneratePhantoms,
    MaskImages,
    build_dataset,
    configure_data_context,
    drop_flagged,
    finite_heatmaps,
    manifest_blocks,
    manifest_dataset,
    map_stage,
    phantom_dataset,
    pipeline_counts,
)
from medmask.preprocess._study import (
    PIPELINE_KEYS,
    MultiHotLabels,
    adapter_options,
    source_dataset,
    study_counts,
    study_manifest,
    study_splits,
)

__all__ = [
    "PIPELINE_KEYS",
    "FindingsDataSettings",
    "FindingsSplits",
    "findings_splits",
    "AddOrgans",
    "CropToLungs",
    "GeneratePhantoms",
    "MaskImages",
    "MultiHotLabels",
    "adapter_options",
    "build_dataset",
    "drop_flagged",
    "finite_heatmaps",
    "TASK_ROWS",
    "manifest_blocks",
    "manifest_dataset",
    "map_stage",
    "phantom_dataset",
    "pipeline_counts",
    "source_dataset",
    "study_counts",
    "study_manifest",
    "study_splits",
    "configure_data_context",
]

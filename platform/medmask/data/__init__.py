"""Data: the phantom generator, real-dataset adapters, manifests and Ray Data pipelines."""

from medmask.data.manifest import (
    check_manifest,
    list_manifest_loaders,
    load_manifest,
    read_manifest,
    save_manifest,
)
from medmask.data.study import study_splits

__all__ = [
    "check_manifest",
    "list_manifest_loaders",
    "load_manifest",
    "read_manifest",
    "save_manifest",
    "study_splits",
]

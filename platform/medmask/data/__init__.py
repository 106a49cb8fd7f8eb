"""Data: the phantom generator, real-dataset adapters, manifests, splits and decoding.

This room only reads datasets; it knows nothing of masks and builds no Ray dataset (the
Ray Data stages live in :mod:`medmask.preprocess`).
"""

from medmask.data.manifest import (
    check_manifest,
    list_manifest_loaders,
    load_manifest,
    read_manifest,
    save_manifest,
)

__all__ = [
    "check_manifest",
    "list_manifest_loaders",
    "load_manifest",
    "read_manifest",
    "save_manifest",
]

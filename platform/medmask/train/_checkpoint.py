"""Checkpoints on disk and the stage cache keyed by a hash of the config.

Checkpoints are plain ``torch.save`` dicts loaded with ``torch.load(..., weights_only=True)``:
model / optimizer / scheduler state, the epoch that finished, and JSON-able metadata.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import medmask

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """A stable short hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# The code that defines what a pretraining produces: model, loss, masks, loop, the phantoms.
_CODE_PARTS = ("masking", "models", "methods", "data/phantom.py", "train/_loop.py",
               "train/_loop_utils.py", "train/_optim.py", "train/_pretrain.py",
               "train/_masks.py")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and a digest of the source files that define a pretraining (a
    cached checkpoint of other code is never reused after a change)."""
    return f"{medmask.__version__}+{code_digest(Path(medmask.__file__).parent)}"


def code_digest(package: Path) -> str:
    """SHA-256 (12 hex digits) of the files of :data:`_CODE_PARTS` under ``package``."""
    digest = hashlib.sha256()
    for part in _CODE_PARTS:
        path = package / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def save_checkpoint(directory: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, nested dicts/lists) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(dict(state), tmp)
    tmp.replace(path)  # atomic: a killed worker never leaves a half-written checkpoint
    return path


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no medmask checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


class StageCache:
    """Finished stages' results, keyed by a hash of everything that determines them.

    One cache for every stage (pretraining checkpoints, AHM policies, segmentation scores):
    ``root/<kind>/<hash>/`` holds the result files and ``config.json``, the key it was stored
    under, written last, so an entry exists only once it is complete. Results are built in a
    ``.partial`` folder and renamed into place (atomic on one file system): a killed run
    never leaves a half-written entry that a later run would reuse.
    """

    def __init__(self, root: str | Path, kind: str) -> None:
        self.root = Path(root) / kind
        self.kind = kind

    def entry(self, key: Mapping[str, Any]) -> Path:
        """The cache folder for ``key`` (may not exist yet)."""
        return self.root / config_hash(key)

    def lookup(self, key: Mapping[str, Any]) -> Path | None:
        """The complete entry for ``key``, or None."""
        entry = self.entry(key)
        return entry if (entry / CONFIG_FILE).is_file() else None

    def store(self, key: Mapping[str, Any], source: str | Path) -> Path:
        """Copy a finished result folder into the cache with its key; return the entry."""
        with self.build(key) as partial:
            shutil.copytree(source, partial, dirs_exist_ok=True)
        return self.entry(key)

    @contextmanager
    def build(self, key: Mapping[str, Any]) -> Iterator[Path]:
        """A fresh ``.partial`` folder to write a result into; on success it becomes the entry
        for ``key`` (with ``config.json``), on an exception it is removed."""
        entry = self.entry(key)
        partial = entry.with_name(entry.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            yield partial
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        (partial / CONFIG_FILE).write_text(json.dumps(dict(key), sort_keys=True, indent=2,
                                                      default=str))
        shutil.rmtree(entry, ignore_errors=True)
        partial.rename(entry)

"""Keyed noise: random numbers that are a pure function of a key, for the whole batch at once.

Part of the leaf vocabulary (imports nothing of medmask). A counter-based hash (SplitMix64)
turns (per-image seed, counter) into uniform numbers, so the same image gets the same mask or
the same phantom draw on any worker and in any batch composition, and a new one each epoch
when the seed is derived from (run seed, epoch, image id) (:func:`mask_seeds`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finalizer, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def keyed_uniform(seeds: Any, num: int) -> np.ndarray:
    """Uniform [0, 1) float32 noise [B, num], row b a pure function of ``seeds[b]`` (int64)."""
    s = np.asarray(seeds).astype(np.int64, copy=False).view(np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        counters = s * np.uint64(0x100000001B3) + np.arange(num, dtype=np.uint64)[None, :]
    bits = splitmix64(splitmix64(counters)) >> np.uint64(40)  # 24 random bits
    return bits.astype(np.float32) * np.float32(2.0**-24)


def mask_seeds(image_keys: Any, seed: int, epoch: Any = 0) -> np.ndarray:
    """Per-image int64 seeds from integer image keys, a run seed and an epoch (vectorized;
    ``epoch`` an int or one per image)."""
    keys = np.asarray(image_keys).astype(np.int64, copy=False).view(np.uint64)
    epochs = np.asarray(epoch, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        mixed = splitmix64(keys ^ splitmix64(np.uint64(seed) * _M1 + epochs))
    return mixed.view(np.int64)


def image_keys(ids: Any) -> np.ndarray:
    """Stable int64 hashes of image ids (vectorized; the same on every worker and machine)."""
    import pandas as pd  # defer: pandas (the rooms that only mask never load it)

    values = np.asarray(ids, dtype=object)
    return pd.util.hash_array(values, categorize=False).view(np.int64)

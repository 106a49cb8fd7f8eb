"""Paired comparisons of two arms of a study, with a bootstrap interval over test images.

Both arms (e.g. MAE-pretrained vs From Scratch) are scored on the same test images at every
seed. The statistic is the seed-averaged difference of the arms' mean per-image score
(accuracy: 1 where the prediction is right):

    d = (1 / S) sum_s [ mean_i a_s,i - mean_i b_s,i ]

and its 95 % interval is a paired percentile bootstrap: each of the 2,000 resamples draws,
within every seed, n_s test images with replacement (the same draw for both arms) and
recomputes d. The per-seed differences are reported beside it: an interval narrower than
the spread between seeds says the test set, not the training, is the smaller noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000


@dataclass(frozen=True)
class PairedDifference:
    """``difference`` (seed-averaged), its bootstrap interval and each seed's difference."""

    difference: float
    low: float
    high: float
    per_seed: tuple[float, ...]

    def excludes_zero(self) -> bool:
        """The 95 % interval lies entirely above or entirely below 0."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: Sequence[np.ndarray], b: Sequence[np.ndarray], *,
                     resamples: int = RESAMPLES, seed: int = 0,
                     level: float = 0.95) -> PairedDifference:
    """The paired difference of arms ``a`` and ``b``: one per-image score array per seed
    (``a[s]`` and ``b[s]`` over the same test images, in the same order).

    Raises:
        ValueError: different seed counts, or arrays of one seed that do not pair up.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same non-zero number of seeds in both arms, got "
                         f"{len(a)} and {len(b)}")
    pairs = [(np.asarray(x, np.float64), np.asarray(y, np.float64))
             for x, y in zip(a, b, strict=True)]
    for s, (x, y) in enumerate(pairs):
        if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
            raise ValueError(f"seed {s}: the arms' per-image scores do not pair up "
                             f"(shapes {x.shape} and {y.shape})")
    rng = np.random.default_rng(seed)
    per_seed = tuple(float(x.mean() - y.mean()) for x, y in pairs)
    resampled = np.zeros(resamples)
    for x, y in pairs:  # a loop over seeds (a handful); the resamples are vectorized
        idx = rng.integers(0, len(x), size=(resamples, len(x)))
        resampled += (x - y)[idx].mean(axis=1)
    resampled /= len(pairs)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return PairedDifference(float(np.mean(per_seed)), float(low), float(high), per_seed)

"""Patient-level, stratified splits and nested label-fraction subsets.

- :func:`iterative_stratification`: Sechidis, Tsoumakas & Vlahavas (2011), "On the
  stratification of multi-label data", ECML PKDD, Algorithm 1, in numpy. For one-hot labels it
  reduces to ordinary stratification by class.
- :func:`split_by_patient`: stratified train/val/test by patient (no patient in two splits); the
  unit of stratification is the patient, labelled by the union of its images' labels.
- :func:`carve_validation`: the dataset's official train(+val) list split into train and val by
  patient (NIH ChestX-ray14 ``train_val_list.txt``).
- :func:`label_fraction_subsets`: nested 1/5/10/50/100 % subsets with the same ratio in every
  class and at least one image per class, reproducible by seed, returned as id arrays to log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from medmask import columns as C

DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 1.0)


def iterative_stratification(
    labels: np.ndarray, fractions: Sequence[float], seed: int = 0
) -> np.ndarray:
    """Assign each example to a fold so every label is spread in proportion to ``fractions``.

    Sechidis et al. (2011), Algorithm 1: desired counts per fold ``c_j = r_j * N`` and per
    label ``c_j^i = r_j * |D^i|``; repeatedly take the label with the fewest remaining
    examples and give each of its examples to the fold that most wants that label (ties: the
    fold that wants most examples overall, then at random); label-less examples go last to the
    folds with the largest remaining demand.

    Args:
        labels: [N, K] array, positive where > 0 (NaN and -1 count as negative).
        fractions: one ratio per fold, summing to 1.
        seed: tie-breaking seed.

    Returns:
        int array [N]: the fold index of each example.
    """
    ratios = np.asarray(fractions, dtype=float)
    if ratios.ndim != 1 or (ratios < 0).any() or not np.isclose(ratios.sum(), 1.0):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {list(fractions)}")
    y = np.nan_to_num(np.asarray(labels, dtype=float).reshape(len(labels), -1)) > 0
    n, k = y.shape
    rng = np.random.default_rng(seed)
    desired = ratios * n
    desired_label = ratios[:, None] * y.sum(0)[None, :]  # [folds, K]
    fold = np.full(n, -1, dtype=np.int64)
    remaining = y.copy()
    unassigned = np.ones(n, bool)
    counts = remaining.sum(0)
    while counts.any():
        candidates = np.flatnonzero(counts == counts[counts > 0].min())
        label = rng.choice(candidates)
        for i in rng.permutation(np.flatnonzero(remaining[:, label] & unassigned)):
            j = _pick_fold(desired_label[:, label], desired, rng)
            fold[i] = j
            unassigned[i] = False
            desired_label[j] -= y[i]
            desired[j] -= 1
        remaining[~unassigned] = False
        counts = remaining.sum(0)
    for i in rng.permutation(np.flatnonzero(unassigned)):
        j = _pick_fold(desired, desired, rng)
        fold[i] = j
        desired[j] -= 1
    return fold


def _pick_fold(primary: np.ndarray, secondary: np.ndarray, rng: np.random.Generator) -> int:
    best = np.flatnonzero(primary == primary.max())
    if len(best) > 1:
        best = best[secondary[best] == secondary[best].max()]
    return int(rng.choice(best))


def patient_label_matrix(
    df: pd.DataFrame, label_columns: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Patients and their [P, K] positive-label union (single-label sets one-hot ``label``)."""
    patients = _patients(df)
    if label_columns:
        per_image = np.nan_to_num(df[list(label_columns)].to_numpy(dtype=float)) > 0
    elif C.LABEL in df.columns:
        codes = df[C.LABEL].to_numpy(dtype=np.int64)
        per_image = np.zeros((len(df), int(codes.max()) + 1), bool)
        per_image[np.arange(len(df)), codes] = True
    else:
        per_image = np.zeros((len(df), 0), bool)
    unique, inverse = np.unique(patients, return_inverse=True)
    matrix = np.zeros((len(unique), per_image.shape[1]), bool)
    np.logical_or.at(matrix, inverse, per_image)
    return unique, matrix


def split_by_patient(
    df: pd.DataFrame,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    label_columns: Sequence[str] | None = None,
) -> pd.Series:
    """Split names per row, by patient, stratified by label (iterative for multi-label sets).

    Args:
        df: a manifest; ``patient_id`` groups rows (each row its own patient when absent);
            ``label`` (single-label) or ``label_columns`` (multi-label) stratify.
        fractions: ``{split name: ratio}`` over patients, summing to 1.
        seed: reproducibility seed.

    Returns:
        a string Series aligned with ``df``.
    """
    names = list(fractions)
    patients, matrix = patient_label_matrix(df, label_columns)
    folds = iterative_stratification(matrix, [fractions[s] for s in names], seed)
    by_patient = dict(zip(patients, np.asarray(names, dtype=object)[folds], strict=True))
    return pd.Series(_patients(df), index=df.index).map(by_patient).astype(str)


def carve_validation(
    df: pd.DataFrame,
    val_fraction: float,
    seed: int = 0,
    label_columns: Sequence[str] | None = None,
    *,
    from_split: str = "train",
) -> pd.Series:
    """Move ``val_fraction`` of the patients of ``from_split`` to ``"val"`` (stratified)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    split = df[C.SPLIT].astype(str).copy()
    rows = split == from_split
    if val_fraction == 0.0 or not rows.any():
        return split
    carved = split_by_patient(df[rows], {"train": 1.0 - val_fraction, "val": val_fraction},
                              seed, label_columns)
    split[rows] = carved.to_numpy()
    return split


def check_patient_disjoint(df: pd.DataFrame) -> None:
    """``ValueError`` naming patients that appear in more than one split."""
    if C.PATIENT not in df.columns or C.SPLIT not in df.columns:
        return
    per_patient = df.groupby(C.PATIENT)[C.SPLIT].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise ValueError(f"{len(leaked)} patient(s) appear in several splits, "
                         f"e.g. {leaked.index[:5].tolist()}")


def label_fraction_subsets(
    df: pd.DataFrame,
    fractions: Sequence[float] = LABEL_FRACTIONS,
    seed: int = 0,
    label_columns: Sequence[str] | None = None,
) -> dict[float, np.ndarray]:
    """Nested labelled subsets: ``{fraction: ids}``, each inside every larger one.

    Each class gets one seeded permutation and contributes its first
    ``max(1, floor(fraction * n_c + 0.5))`` images, so every class keeps the same ratio (up to
    rounding), has at least one image, and a smaller fraction is a prefix of a larger one.
    Multi-label sets group each image by its rarest positive finding (``"none"`` when it has
    none), which keeps every finding's ratio close to the fraction.

    Args:
        df: the labelled pool (usually the train split) with ``id`` and ``label`` or
            ``label_columns``.
        fractions: ratios in (0, 1].
        seed: reproducibility seed.

    Returns:
        ``{fraction: array of ids}``, ids in a reproducible order (log them).
    """
    fractions = sorted(float(f) for f in fractions)
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise ValueError(f"label fractions must lie in (0, 1], got {fractions}")
    groups = _fraction_groups(df, label_columns)
    ids = df[C.ID].to_numpy()
    rng = np.random.default_rng(seed)
    orders = {g: rng.permutation(np.flatnonzero(groups == g)) for g in np.unique(groups)}
    out: dict[float, np.ndarray] = {}
    for fraction in fractions:
        chosen = [order[: max(1, int(np.floor(fraction * len(order) + 0.5)))]
                  for order in orders.values()]
        out[fraction] = ids[np.sort(np.concatenate(chosen))]
    return out


def _fraction_groups(df: pd.DataFrame, label_columns: Sequence[str] | None) -> np.ndarray:
    if not label_columns:
        if C.LABEL not in df.columns:
            raise ValueError(f"label fractions need '{C.LABEL}' or label_columns")
        return df[C.LABEL].astype(str).to_numpy()
    positive = np.nan_to_num(df[list(label_columns)].to_numpy(dtype=float)) > 0
    prevalence = positive.sum(0)
    rarity = np.where(positive, prevalence[None, :], np.iinfo(np.int64).max)
    rarest = np.asarray(label_columns, dtype=object)[rarity.argmin(1)]
    return np.where(positive.any(1), rarest, "none").astype(str)


def _patients(df: pd.DataFrame) -> np.ndarray:
    source = df[C.PATIENT] if C.PATIENT in df.columns else df[C.ID]
    return source.astype(str).to_numpy()

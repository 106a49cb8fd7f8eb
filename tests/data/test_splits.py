import numpy as np
import pandas as pd
import pytest

from medmask import columns as C
from medmask.data.splits import (
    carve_validation,
    check_patient_disjoint,
    iterative_stratification,
    label_fraction_subsets,
    split_by_patient,
)


def _single_label(n_patients=300, seed=0):
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 4, n_patients)
    patients = np.repeat(np.arange(n_patients), per_patient)
    label = np.repeat(rng.choice(4, n_patients, p=[0.5, 0.25, 0.15, 0.1]), per_patient)
    return pd.DataFrame({C.ID: [f"img{i}" for i in range(len(patients))],
                         C.PATIENT: patients.astype(str), C.LABEL: label})


def _multi_label(n=1000, k=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < np.linspace(0.03, 0.4, k)).astype(float)
    labels[rng.random((n, k)) < 0.05] = np.nan
    df = pd.DataFrame(labels, columns=[f"f{j}" for j in range(k)])
    df[C.ID] = [f"x{i}" for i in range(n)]
    df[C.PATIENT] = (np.arange(n) // 2).astype(str)
    return df, [f"f{j}" for j in range(k)]


def test_iterative_stratification_spreads_every_label():
    df, findings = _multi_label()
    labels = np.nan_to_num(df[findings].to_numpy()) > 0
    fold = iterative_stratification(labels, [0.7, 0.2, 0.1], seed=3)
    assert set(fold) == {0, 1, 2}
    sizes = np.bincount(fold) / len(fold)
    np.testing.assert_allclose(sizes, [0.7, 0.2, 0.1], atol=0.01)
    for j in range(labels.shape[1]):
        share = np.bincount(fold[labels[:, j]], minlength=3) / labels[:, j].sum()
        np.testing.assert_allclose(share, [0.7, 0.2, 0.1], atol=0.05)
    np.testing.assert_array_equal(fold, iterative_stratification(labels, [0.7, 0.2, 0.1], 3))
    with pytest.raises(ValueError, match="sum to 1"):
        iterative_stratification(labels, [0.5, 0.2])


def test_split_by_patient_is_disjoint_stratified_and_seeded():
    df = _single_label()
    df[C.SPLIT] = split_by_patient(df, seed=7)
    check_patient_disjoint(df)
    counts = df.groupby(C.PATIENT).first().groupby(C.LABEL)[C.SPLIT].value_counts(
        normalize=True).unstack()
    np.testing.assert_allclose(counts[["train", "val", "test"]].to_numpy(),
                               np.tile([0.8, 0.1, 0.1], (4, 1)), atol=0.04)
    assert split_by_patient(df, seed=7).tolist() == df[C.SPLIT].tolist()
    assert split_by_patient(df, seed=8).tolist() != df[C.SPLIT].tolist()


def test_multilabel_split_by_patient():
    df, findings = _multi_label()
    df[C.SPLIT] = split_by_patient(df, {"train": 0.8, "test": 0.2}, 0, findings)
    check_patient_disjoint(df)
    for f in findings:
        positives = df[df[f] > 0]
        assert abs((positives[C.SPLIT] == "test").mean() - 0.2) < 0.06


def test_carve_validation_keeps_test_and_patients():
    df = _single_label()
    df[C.SPLIT] = np.where(df[C.PATIENT].astype(int) < 60, "test", "train")
    split = carve_validation(df, 0.1, seed=0)
    assert (split[df[C.SPLIT] == "test"] == "test").all()
    df[C.SPLIT] = split
    check_patient_disjoint(df)
    val_patients = df.loc[df[C.SPLIT] == "val", C.PATIENT].nunique()
    assert abs(val_patients - 24) <= 1  # 10 % of 240 train patients, per-class rounding
    leaked = df.copy()
    leaked.loc[leaked.index[0], C.SPLIT] = "test" if leaked[C.SPLIT].iloc[0] != "test" else "val"
    leaked.loc[leaked.index[1], C.PATIENT] = leaked[C.PATIENT].iloc[0]
    leaked.loc[leaked.index[1], C.SPLIT] = "train"
    with pytest.raises(ValueError, match="several splits"):
        check_patient_disjoint(leaked)


def test_label_fractions_nested_per_class_ratio_min_one_and_seeded():
    df = _single_label()
    subsets = label_fraction_subsets(df, seed=5)
    assert list(subsets) == [0.01, 0.05, 0.1, 0.5, 1.0]
    class_sizes = df[C.LABEL].value_counts()
    fractions = list(subsets)
    for small, large in zip(fractions, fractions[1:], strict=False):
        assert set(subsets[small]) <= set(subsets[large])
    for fraction, ids in subsets.items():
        chosen = df[df[C.ID].isin(ids)][C.LABEL].value_counts()
        for label, n in class_sizes.items():
            assert chosen[label] == max(1, int(np.floor(fraction * n + 0.5)))
    assert len(subsets[1.0]) == len(df)
    again = label_fraction_subsets(df, seed=5)
    assert all((again[f] == subsets[f]).all() for f in subsets)
    assert set(label_fraction_subsets(df, seed=6)[0.1]) != set(subsets[0.1])


def test_label_fractions_multilabel_keep_each_finding_near_the_ratio():
    df, findings = _multi_label(n=2000)
    subsets = label_fraction_subsets(df, (0.1, 0.5), seed=0, label_columns=findings)
    assert set(subsets[0.1]) <= set(subsets[0.5])
    chosen = df[df[C.ID].isin(subsets[0.1])]
    for f in findings:
        assert (chosen[f] > 0).sum() >= 1
        assert abs((chosen[f] > 0).sum() / (df[f] > 0).sum() - 0.1) < 0.04
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        label_fraction_subsets(df, (0.0, 0.5), label_columns=findings)

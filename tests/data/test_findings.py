"""The contour-overlay protocol's data (medmask.data.findings) on a tiny MIMIC-CXR-JPG +
CheXmask cohort in their published layouts: frontal views only, the five findings with
uncertain and blank mapped (and counted), only images with a positive, splits by patient,
224-style bicubic decoding in [0, 1] with the CheXmask organs, clear errors on bad input;
and the phantoms' validation split by image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medmask import columns as C
from medmask.data.findings import PAPER_FINDINGS, FindingsDataSettings, findings_splits
from tests.data.fixtures import write_mimic_cohort


@pytest.fixture
def cohort(tmp_path):
    tables = write_mimic_cohort(tmp_path / "mimic", tmp_path / "chexmask")
    return tmp_path, tables


def _settings(tmp_path, **kw) -> FindingsDataSettings:
    return FindingsDataSettings(**{"name": "mimic_cxr", "root": str(tmp_path / "mimic"),
                                   "chexmask_root": str(tmp_path / "chexmask"), "size": 32,
                                   **kw})


def _expected_labels(tables, ids, uncertain: float, blank: float) -> np.ndarray:
    images = tables["images"].set_index("dicom_id").loc[ids]
    labels = tables["labels"].set_index("study_id").loc[images["study_id"], list(PAPER_FINDINGS)]
    values = labels.to_numpy(float, copy=True)
    values[values == -1] = uncertain
    values[np.isnan(values)] = blank
    return values


@pytest.mark.parametrize("mapping", ["zeros", "ones"])
def test_frontal_images_with_a_positive_their_mapped_labels_and_the_counts(cohort, mapping):
    tmp_path, tables = cohort
    data = findings_splits(_settings(tmp_path, uncertain=mapping, blank="zeros"))
    images, masks = tables["images"], tables["masks"]
    frontal = images[images["ViewPosition"] != "LATERAL"]
    good = set(masks.loc[masks["dice"] >= 0.7, "dicom_id"])
    value = 1.0 if mapping == "ones" else 0.0
    scored = [i for i in frontal["dicom_id"] if i in good]
    expected = _expected_labels(tables, scored, value, 0.0)
    with_positive = {i for i, row in zip(scored, expected, strict=True) if row.max() > 0}
    seen = {}
    for split in C.SPLITS:
        rows = data.split(split)
        assert rows[C.IMAGE].shape[1:] == (32, 32) and rows[C.IMAGE].dtype == np.float32
        assert rows[C.IMAGE].min() >= 0.0 and rows[C.IMAGE].max() <= 1.0
        assert set(np.unique(rows[C.ORGANS])) == {0, 1, 2, 3}  # lungs and heart from CheXmask
        assert (rows[C.LABELS].max(1) == 1).all()
        np.testing.assert_array_equal(
            rows[C.LABELS], _expected_labels(tables, list(rows[C.ID]), value, 0.0))
        seen |= dict.fromkeys(rows[C.ID], split)
    assert set(seen) == with_positive  # frontal, a CheXmask row of quality, a positive
    counts = data.counts
    assert counts["mimic_dropped/other_view"] == len(images) - len(frontal)
    assert counts["dropped/no_chexmask"] == 2  # no row, and the low-quality row
    assert counts["chexmask_dropped/low_quality"] == 1
    assert counts["dropped/no_positive"] == len(scored) - len(with_positive)
    raw = _expected_labels(tables, scored, -1.0, np.nan)
    for k, name in enumerate(PAPER_FINDINGS):
        assert counts[f"labels/{name}/uncertain"] == (raw[:, k] == -1).sum()
        assert counts[f"labels/{name}/blank"] == np.isnan(raw[:, k]).sum()
    # the official split, by patient
    official = images.set_index("dicom_id")["split"].replace({"validate": "val"})
    assert all(official[i] == s for i, s in seen.items())


@pytest.mark.parametrize("split", ["official", "patient"])
def test_no_patient_is_in_two_splits(cohort, split):
    tmp_path, _ = cohort
    data = findings_splits(_settings(tmp_path, split=split, val_fraction=0.25,
                                     test_fraction=0.25))
    patients = {s: set(data.split(s)[C.PATIENT]) for s in C.SPLITS}
    assert all(patients.values())
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])


def test_a_patient_in_two_official_splits_fails(cohort):
    tmp_path, tables = cohort
    path = tmp_path / "mimic" / "mimic-cxr-2.0.0-split.csv.gz"
    split = pd.read_csv(path)
    first = split["subject_id"] == split["subject_id"].iloc[0]
    split.loc[first & split.index.isin(split.index[first][:2]), "split"] = "test"
    split.loc[first & ~split.index.isin(split.index[first][:2]), "split"] = "train"
    split.to_csv(path, index=False)
    with pytest.raises(ValueError, match="appear in several splits"):
        findings_splits(_settings(tmp_path))


def test_bad_input_fails_naming_the_file_or_value(cohort):
    tmp_path, _ = cohort
    labels = tmp_path / "mimic" / "mimic-cxr-2.0.0-chexpert.csv.gz"
    table = pd.read_csv(labels)
    table.loc[3, "Edema"] = 2.0
    table.to_csv(labels, index=False)
    with pytest.raises(ValueError, match=r"'Edema' of study \d+ is 2\.0"):
        findings_splits(_settings(tmp_path))
    with pytest.raises(FileNotFoundError, match="MIMIC-CXR-JPG.csv"):
        findings_splits(_settings(tmp_path, chexmask_root=str(tmp_path / "elsewhere")))
    with pytest.raises(ValueError, match="needs chexmask_root"):
        FindingsDataSettings(name="mimic_cxr", root=str(tmp_path))
    with pytest.raises(ValueError, match="uncertain must be one of"):
        _settings(tmp_path, uncertain="keep")


def test_an_unreadable_image_fails_naming_it_or_is_dropped_and_counted(cohort):
    tmp_path, tables = cohort
    data = findings_splits(_settings(tmp_path))
    victim = str(data.split("test")[C.ID][0])
    row = tables["images"].set_index("dicom_id").loc[victim]
    path = (tmp_path / "mimic" / "files" / f"p{str(row['subject_id'])[:2]}"
            / f"p{row['subject_id']}" / f"s{row['study_id']}" / f"{victim}.jpg")
    path.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=victim):
        findings_splits(_settings(tmp_path))
    flagged = findings_splits(_settings(tmp_path, on_bad_image="flag"))
    assert flagged.counts["dropped/bad_image/test"] == 1
    assert victim not in set(flagged.split("test")[C.ID])


def test_phantom_validation_is_a_seeded_part_of_the_training_images():
    settings = FindingsDataSettings(size=32, n_train=40, n_test=10, val_fraction=0.25)
    data = findings_splits(settings)
    train, val, test = (set(data.split(s)[C.ID]) for s in C.SPLITS)
    assert len(val) == 10 and len(train) == 30 and len(test) == 10
    assert not (train & val or train & test or val & test)
    assert set(findings_splits(settings).split("val")[C.ID]) == val
    other = FindingsDataSettings(size=32, n_train=40, n_test=10, val_fraction=0.25, seed=1)
    assert len(findings_splits(other).split("val")[C.ID]) == 10

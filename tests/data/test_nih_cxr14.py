import numpy as np
import pandas as pd
import pytest

from medmask import columns as C
from medmask.data.manifest import load_manifest
from medmask.data.nih_cxr14 import NIH_FINDINGS, load_nih_cxr14, parse_finding_labels
from medmask.data.splits import check_patient_disjoint
from tests.data.fixtures import nih_rows, write_nih_cxr14


def test_finding_labels_parse_pipes_and_no_finding():
    out = parse_finding_labels(pd.Series(["Cardiomegaly|Effusion", "No Finding", "Hernia"]))
    assert out.shape == (3, 14)
    assert out[0].nonzero()[0].tolist() == [NIH_FINDINGS.index("Cardiomegaly"),
                                             NIH_FINDINGS.index("Effusion")]
    assert out[1].sum() == 0 and out[2, NIH_FINDINGS.index("Hernia")] == 1
    with pytest.raises(ValueError, match="'Pneumonitis'"):
        parse_finding_labels(pd.Series(["Pneumonitis"]))


def test_official_lists_honoured_and_val_carved_by_patient(tmp_path):
    rows = nih_rows(n_patients=20, per_patient=2)
    root = write_nih_cxr14(tmp_path, rows, test_patients=4, skip_images=("00000005_001.png",))
    df = load_manifest("nih_cxr14", root, val_fraction=0.25, seed=1)
    assert len(df) == 39 and df.attrs["dropped"] == {"not_in_official_lists": 0,
                                                     "missing_image": 1}
    test_list = set((root / "test_list.txt").read_text().split())
    assert set(df.loc[df[C.SPLIT] == "test", C.ID]) == test_list
    assert set(df[C.SPLIT]) == {"train", "val", "test"}
    check_patient_disjoint(df)
    val_patients = df.loc[df[C.SPLIT] == "val", C.PATIENT].nunique()
    assert abs(val_patients - 4) <= 1  # 25 % of the 16 train_val patients (stratified)
    assert df.attrs["findings"] == list(NIH_FINDINGS)
    expected = parse_finding_labels(pd.Series([r[1] for r in rows]))
    by_id = df.set_index(C.ID)
    for i, row in enumerate(rows):
        if row[0] in by_id.index:
            np.testing.assert_array_equal(by_id.loc[row[0], list(NIH_FINDINGS)].to_numpy(float),
                                          expected[i])
    assert by_id.loc["00000001_000.png", C.PATH].endswith("images_001/images/00000001_000.png")
    again = load_nih_cxr14(root, val_fraction=0.25, seed=1)
    assert again[C.SPLIT].tolist() == df[C.SPLIT].tolist()  # reproducible


def test_missing_lists_and_csv_and_views(tmp_path):
    root = write_nih_cxr14(tmp_path)
    (root / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test_list.txt"):
        load_nih_cxr14(root)
    df = load_nih_cxr14(root, split="none", views=("PA",))
    assert C.SPLIT not in df.columns and (df["View Position"] == "PA").all()
    assert df.attrs["dropped"]["other_view"] == 12
    with pytest.raises(FileNotFoundError, match="missing on disk"):
        (root / "images_001" / "images" / "00000001_000.png").unlink()
        load_nih_cxr14(root, split="none", on_missing="raise")
    (root / "Data_Entry_2017.csv").unlink()
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017.csv"):
        load_nih_cxr14(root)

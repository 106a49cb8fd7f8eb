import numpy as np
import pytest

from medmask import columns as C
from medmask.data.manifest import load_manifest
from medmask.data.mimic_cxr import CHEXPERT_FINDINGS, load_mimic_cxr
from medmask.data.splits import check_patient_disjoint
from tests.data.fixtures import write_mimic_cxr


def test_metadata_labels_split_and_paths(tmp_path):
    root = write_mimic_cxr(tmp_path)
    df = load_manifest("mimic_cxr", root)
    assert df[C.ID].tolist() == ["aaaa1111-0001", "aaaa1111-0002", "bbbb2222-0001",
                                 "cccc3333-0001", "dddd4444-0001"]
    assert df[C.SPLIT].tolist() == ["train", "train", "val", "test", "train"]
    assert df[C.PATH][2].endswith("files/p10/p10000764/s57375967/bbbb2222-0001.jpg")
    assert df.attrs["findings"] == list(CHEXPERT_FINDINGS)
    first = df.iloc[0]
    assert first["Atelectasis"] == 1.0 and first["Cardiomegaly"] == -1.0  # uncertain kept
    assert np.isnan(first["No Finding"]) and np.isnan(first["Edema"])  # blank stays NaN
    assert df.iloc[2]["Edema"] == 0.0 and df.iloc[2]["Pleural Effusion"] == 1.0
    assert df.attrs["unlabeled"] == 1 and np.isnan(df.iloc[4]["Atelectasis"])
    check_patient_disjoint(df)


@pytest.mark.parametrize(("policy", "value"), [("zeros", 0.0), ("ones", 1.0)])
def test_uncertain_mapping(tmp_path, policy, value):
    df = load_mimic_cxr(write_mimic_cxr(tmp_path, gz=False), uncertain=policy)
    assert df.iloc[0]["Cardiomegaly"] == value and df.iloc[0]["Atelectasis"] == 1.0
    assert not (df[list(CHEXPERT_FINDINGS)] == -1).any().any()


def test_views_missing_images_and_bad_options(tmp_path):
    root = write_mimic_cxr(tmp_path, skip_images=("cccc3333-0001",))
    df = load_mimic_cxr(root, views=("PA", "AP"))
    assert df[C.ID].tolist() == ["aaaa1111-0001", "bbbb2222-0001", "dddd4444-0001"]
    assert df.attrs["dropped"] == {"other_view": 1, "not_in_split": 0, "missing_image": 1}
    with pytest.raises(FileNotFoundError, match="cccc3333-0001.jpg"):
        load_mimic_cxr(root, on_missing="raise")
    with pytest.raises(ValueError, match="uncertain"):
        load_mimic_cxr(root, uncertain="maybe")
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="split CSV"):
        load_mimic_cxr(root)
    assert C.SPLIT not in load_mimic_cxr(root, split=False).columns

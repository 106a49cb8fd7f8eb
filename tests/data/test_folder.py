import pandas as pd
import pytest

from medmask import columns as C
from medmask.data.folder import load_folder
from medmask.data.manifest import load_manifest
from tests.data.fixtures import write_class_folders, write_png


def test_class_folders(tmp_path):
    write_class_folders(tmp_path, {"normal": 2, "abnormal": 3})
    df = load_manifest("folder", tmp_path)
    assert df.attrs["classes"] == ["abnormal", "normal"]
    assert df.groupby(C.LABEL_NAME)[C.LABEL].agg(["first", "size"]).to_dict() == {
        "first": {"abnormal": 0, "normal": 1}, "size": {"abnormal": 3, "normal": 2}}
    assert "normal/normal_0.png" in set(df[C.ID])
    ordered = load_folder(tmp_path, classes=["normal", "abnormal"])
    assert ordered.loc[ordered[C.LABEL_NAME] == "normal", C.LABEL].unique().tolist() == [0]
    with pytest.raises(FileNotFoundError, match="missing_class"):
        load_folder(tmp_path, classes=["normal", "missing_class"])


def test_csv_mode_with_missing_file_counted(tmp_path):
    for name in ("a.png", "sub/b.png", "c.png"):
        write_png(tmp_path / name, (4, 4))
    pd.DataFrame({"file": ["a.png", "sub/b.png", "c.png", "gone.png"],
                  "dx": ["x", "y", "x", "y"], "pid": [1, 1, 2, 3],
                  "fold": ["train", "train", "test", "val"]}).to_csv(tmp_path / "list.csv")
    df = load_folder(tmp_path, csv="list.csv", path_column="file", label_column="dx",
                     patient_column="pid", split_column="fold")
    assert df[C.ID].tolist() == ["a.png", "sub/b.png", "c.png"]
    assert df[C.LABEL].tolist() == [0, 1, 0] and df[C.PATIENT].tolist() == ["1", "1", "2"]
    assert df.attrs["dropped"] == {"missing_image": 1} and df[C.SPLIT].tolist()[2] == "test"
    with pytest.raises(FileNotFoundError, match="gone.png"):
        load_folder(tmp_path, csv="list.csv", path_column="file", label_column="dx",
                    on_missing="raise")
    with pytest.raises(ValueError, match=r"lacks columns \['path', 'label'\]"):
        load_folder(tmp_path, csv="list.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_folder(tmp_path, csv="nope.csv")

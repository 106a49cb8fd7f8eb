import numpy as np
import pandas as pd
import pytest

from medmask import columns as C
from medmask.data import load_manifest, read_manifest, save_manifest
from medmask.data.manifest import check_manifest, list_manifest_loaders
from tests.data.fixtures import write_mimic_cxr


def test_registry_names_match_the_hydra_group():
    assert list_manifest_loaders() == ["chexmask", "covid_radiography", "eyegaze", "folder",
                                       "lgg_slices", "mimic_cxr", "nifti_volumes", "nih_cxr14"]
    with pytest.raises(ValueError, match="valid names"):
        load_manifest("covid", ".")


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_manifest("nih_cxr14", tmp_path / "nowhere")


def test_parquet_round_trip_keeps_attrs_and_nans(tmp_path):
    df = load_manifest("mimic_cxr", write_mimic_cxr(tmp_path / "m"))
    path = save_manifest(df, tmp_path / "out" / "manifest.parquet")
    back = read_manifest(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back.attrs == df.attrs and back.attrs["findings"][0] == "Atelectasis"
    assert np.isnan(back.iloc[0]["Edema"])
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        read_manifest(tmp_path / "nothing.parquet")


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.drop(columns=[C.PATH]), "lacks columns"),
    (lambda d: pd.concat([d, d]), "not unique"),
    (lambda d: d.assign(**{C.SPLIT: "validate"}), "splits must be"),
    (lambda d: d.assign(**{C.LABEL: 0.5}), "integer"),
    (lambda d: d.assign(Edema=2.0), "values"),
])
def test_schema_check_rejects(tmp_path, change, message):
    df = pd.DataFrame({C.ID: ["a", "b"], C.PATH: ["/a", "/b"], C.SOURCE: "x", C.LABEL: [0, 1],
                       "Edema": [1.0, np.nan]})
    df.attrs["findings"] = ["Edema"]
    check_manifest(df)
    bad = change(df)
    bad.attrs = df.attrs
    with pytest.raises(ValueError, match=message):
        check_manifest(bad)

import numpy as np
import pytest

from medmask import columns as C
from medmask.data.covid_radiography import load_covid_radiography, organs_from_lung_mask
from medmask.data.imageio import read_image, read_mask
from medmask.data.manifest import load_manifest
from tests.data.fixtures import COVID_FOLDERS, write_covid_radiography


def test_reads_the_four_class_folders_with_masks_and_metadata(tmp_path):
    write_covid_radiography(tmp_path, per_class=3)
    df = load_manifest("covid_radiography", tmp_path)  # parent of the dataset folder works
    assert len(df) == 12
    assert df.groupby(C.LABEL_NAME)[C.LABEL].first().to_dict() == {
        "Normal": 0, "COVID": 1, "Lung_Opacity": 2, "Viral Pneumonia": 3}
    assert df[C.LABEL].dtype == np.int64 and df[C.SOURCE].eq("covid_radiography").all()
    assert set(df[C.ID]) >= {"COVID-1", "Viral Pneumonia-3", "Normal-2"}
    row = df[df[C.ID] == "Viral Pneumonia-2"].iloc[0]
    assert row[C.ORGANS_PATH].endswith("Viral Pneumonia/masks/Viral Pneumonia-2.png")
    assert row["origin_url"] == "https://example.org/Viral Pneumonia/2"
    normal = df[df[C.ID] == "Normal-1"].iloc[0]
    assert normal["origin_url"] == "https://example.org/Normal/1"  # NORMAL-1 in the xlsx
    assert df.attrs["missing_masks"] == 0 and df.attrs["not_in_metadata"] == 0
    assert (df[C.PATIENT] == df[C.ID]).all() and C.SPLIT not in df.columns
    image = read_image(row[C.PATH])
    assert image.shape == (12, 12)
    with pytest.raises(ValueError, match="expected 12x12"):
        read_mask(row[C.ORGANS_PATH], image.shape)


def test_lung_mask_organ_map_by_image_half(tmp_path):
    base = write_covid_radiography(tmp_path, per_class=1)
    counts = {}
    mask = read_mask(base / "COVID" / "masks" / "COVID-1.png", (12, 12), resize=True,
                     counts=counts)
    assert counts == {"masks_resized": 1}
    organs = organs_from_lung_mask(mask)
    assert set(np.unique(organs)) == {0, 1, 2}
    assert (organs[:, :6] != 2).all() and (organs[:, 6:] != 1).all()
    assert ((organs > 0) == (mask > 0)).all()


def test_missing_mask_counted_or_raised_and_missing_class_named(tmp_path):
    base = write_covid_radiography(tmp_path, per_class=2)
    (base / "COVID" / "masks" / "COVID-2.png").unlink()
    df = load_covid_radiography(base)
    assert df.attrs["missing_masks"] == 1
    assert df.loc[df[C.ID] == "COVID-2", C.ORGANS_PATH].item() == ""
    with pytest.raises(FileNotFoundError, match="COVID-2"):
        load_covid_radiography(base, on_missing="raise")
    sub = load_covid_radiography(base, classes=("COVID", "Normal"))
    assert sorted(sub[C.LABEL].unique()) == [0, 1] and len(sub) == 4
    import shutil
    shutil.rmtree(base / COVID_FOLDERS[3])
    with pytest.raises(FileNotFoundError, match="Viral Pneumonia"):
        load_covid_radiography(base)
    with pytest.raises(ValueError, match="unknown COVID-19"):
        load_covid_radiography(base, classes=("Covid",))

import cv2
import numpy as np
import pytest

from medmask import columns as C
from medmask.columns import BAD_IMAGE, MASK_RESIZED
from medmask.data.imageio import ImageReadError, read_image
from medmask.data.lgg import load_lgg_slices, patient_of_case
from medmask.data.manifest import load_manifest
from medmask.data.slices import DecodeSlices
from tests.data.fixtures import LGG_CASES, lgg_image, write_lgg


def test_one_row_per_slice_with_target_empty_slices_counted(tmp_path):
    write_lgg(tmp_path)  # 4 cases x 4 slices, slices 1 and 4 empty
    df = load_manifest("lgg_slices", tmp_path)  # the parent of kaggle_3m works
    assert len(df) == 8 and df.attrs["slices_total"] == 16
    assert df.attrs["dropped"] == {"no_target": 8}
    assert df.attrs["normalize"] == "zscore" and df.attrs["zscore_clip"] == 3.0
    row = df[df[C.ID] == "TCGA_CS_4941_19960909_2"].iloc[0]
    assert row[C.PATH].endswith("TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_2.tif")
    assert row[C.LESION_PATH].endswith("TCGA_CS_4941_19960909_2_mask.tif")
    assert row[C.PATIENT] == "TCGA_CS_4941" and row["slice"] == 2
    assert row[C.IMAGE_CHANNEL] == 1 and row[C.SOURCE] == "lgg_slices"
    # two scans of one patient share the patient id
    assert df.groupby(C.PATIENT)["case"].nunique().to_dict() == {
        "TCGA_CS_4941": 2, "TCGA_DU_5849": 1, "TCGA_HT_7879": 1}
    kept = load_lgg_slices(tmp_path / "kaggle_3m", drop_empty=False)
    assert len(kept) == 16 and kept.attrs["dropped"] == {}
    assert kept["slice"].tolist()[:4] == [1, 2, 3, 4]


def test_slices_sort_numerically_and_patient_from_case():
    assert patient_of_case("TCGA_CS_4941_19960909") == "TCGA_CS_4941"
    assert patient_of_case("TCGA_HT_A61A_20000127") == "TCGA_HT_A61A"
    assert patient_of_case("my_scan") == "my_scan"


def test_flair_is_the_green_channel(tmp_path):
    base = write_lgg(tmp_path, cases=LGG_CASES[:1])
    path = base / LGG_CASES[0] / f"{LGG_CASES[0]}_2.tif"
    flair = read_image(path, channel=1)
    np.testing.assert_allclose(flair * 255, lgg_image(0, 2)[..., 1], atol=1e-3)
    assert np.allclose(read_image(path, channel=0), 10 / 255)  # pre-contrast (red)
    mask = cv2.imread(str(path.with_name(f"{LGG_CASES[0]}_2_mask.tif")), cv2.IMREAD_UNCHANGED)
    with pytest.raises(ImageReadError, match="1 channel"):
        read_image(path.with_name(f"{LGG_CASES[0]}_2_mask.tif"), channel=1)
    assert mask.ndim == 2 and set(np.unique(mask)) == {0, 255}


def test_missing_mask_counted_or_raised_bad_mask_named(tmp_path):
    base = write_lgg(tmp_path, empty=())
    (base / LGG_CASES[1] / f"{LGG_CASES[1]}_3_mask.tif").unlink()
    df = load_lgg_slices(base)
    assert df.attrs["dropped"] == {"missing_mask": 1, "no_target": 0} and len(df) == 15
    with pytest.raises(FileNotFoundError, match=f"{LGG_CASES[1]}_3_mask.tif"):
        load_lgg_slices(base, on_missing="raise")
    (base / LGG_CASES[2] / f"{LGG_CASES[2]}_2_mask.tif").write_bytes(b"not a tiff")
    with pytest.raises(ImageReadError, match=f"{LGG_CASES[2]}_2_mask.tif"):
        load_lgg_slices(base)
    with pytest.raises(FileNotFoundError, match="no LGG slices"):
        load_lgg_slices(tmp_path / "kaggle_3m" / LGG_CASES[0])
    with pytest.raises(ValueError, match="normalize"):
        load_lgg_slices(base, normalize="robust")


def test_decode_stage_zscores_flair_and_binarizes_the_lesion(tmp_path):
    base = write_lgg(tmp_path, cases=LGG_CASES[:2])
    df = load_lgg_slices(base)
    batch = {k: df[k].to_numpy() for k in df.columns}
    out = DecodeSlices.from_manifest(df, size=8)(batch)
    images, lesions = out[C.IMAGE], out[C.LESION]
    assert images.shape == (4, 8, 8) and images.dtype == np.float32
    assert lesions.shape == (4, 8, 8) and lesions.dtype == np.uint8
    assert set(np.unique(lesions)) == {0, 1}
    assert ((images >= 0) & (images <= 1)).all()
    np.testing.assert_allclose(images.mean((1, 2)), 0.5, atol=0.02)  # z = 0 -> 0.5
    # the stage's image is the z-scored FLAIR channel resized: check one by hand
    flair = cv2.resize(lgg_image(0, 2)[..., 1].astype(np.float32) / 255, (8, 8),
                       interpolation=cv2.INTER_AREA)
    z = np.clip((flair - flair.mean()) / flair.std(), -3, 3)
    np.testing.assert_allclose(images[0], (z + 3) / 6, atol=1e-5)
    assert not out[BAD_IMAGE].any() and not out[MASK_RESIZED].any()


def test_decode_stage_names_a_bad_image_or_flags_it(tmp_path):
    base = write_lgg(tmp_path, cases=LGG_CASES[:1], empty=())
    df = load_lgg_slices(base)
    bad = base / LGG_CASES[0] / f"{LGG_CASES[0]}_3.tif"
    bad.write_bytes(b"")
    batch = {k: df[k].to_numpy() for k in df.columns}
    with pytest.raises(ImageReadError, match=f"{LGG_CASES[0]}_3.tif"):
        DecodeSlices(8)(batch)
    out = DecodeSlices(8, on_bad_image="flag")(batch)
    assert out[BAD_IMAGE].tolist() == [False, False, True, False]
    assert (out[C.IMAGE][2] == 0).all()

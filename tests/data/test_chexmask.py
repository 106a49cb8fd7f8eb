import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medmask import columns as C
from medmask.data.chexmask import (
    MASK_HEIGHT,
    RLE_HEART,
    load_chexmask,
    organ_map,
    rle_decode,
    rle_encode,
    row_organ_map,
)
from medmask.data.manifest import load_manifest
from tests.data.fixtures import (
    chexmask_masks,
    write_chexmask,
    write_mimic_cxr,
    write_nih_cxr14,
    write_png,
)


def _reference_decode(rle, height, width):
    """The dataset's own get_mask_from_RLE (DataPostprocessing/utils.py), as a loop."""
    runs = np.array([int(x) for x in rle.split()])
    mask = np.zeros(height * width, np.uint8)
    for start, length in zip(runs[::2], runs[1::2], strict=True):
        mask[start - 1:start - 1 + length] = 255
    return mask.reshape(height, width)


def test_rle_convention_is_one_indexed_row_major():
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = mask[0, 1] = True  # flat 0, 1 -> start 1, length 2
    mask[1, 3] = mask[2, 0] = True  # flat 7, 8 -> start 8, length 2 (wraps rows)
    assert rle_encode(mask) == "1 2 8 2"
    np.testing.assert_array_equal(rle_decode("1 2 8 2", 3, 4), mask)


@pytest.mark.parametrize("empty", ["-1", "", "  ", None, float("nan")])
def test_empty_rle_means_no_mask(empty):
    out = rle_decode(empty, 5, 6)
    assert out.shape == (5, 6) and out.dtype == bool and not out.any()
    assert rle_encode(np.zeros((5, 6))) == ""


@settings(max_examples=40, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_rle_round_trip_and_matches_reference(mask):
    text = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(text, *mask.shape), mask)
    if text:
        np.testing.assert_array_equal(_reference_decode(text, *mask.shape) > 0, mask)


@pytest.mark.parametrize("bad", ["1 2 3", "0 2", "11 5", "a b"])
def test_bad_rle_raises(bad):
    with pytest.raises(ValueError):
        rle_decode(bad, 3, 4)


def test_organ_map_paints_heart_over_lungs():
    masks = chexmask_masks(12, 16)
    organs = organ_map(*(rle_encode(masks[k]) for k in ("Right Lung", "Left Lung", "Heart")),
                       12, 16)
    assert organs[3, 2] == C.ORGAN_RIGHT_LUNG and organs[3, 10] == C.ORGAN_LEFT_LUNG
    assert organs[7, 4] == C.ORGAN_HEART and organs[7, 9] == C.ORGAN_HEART  # overlaps
    assert (organs == C.ORGAN_HEART).sum() == masks["Heart"].sum() == 30
    assert (organs == C.ORGAN_RIGHT_LUNG).sum() == (masks["Right Lung"] & ~masks["Heart"]).sum()


def test_chexmask_with_mimic_source_filters_quality_and_pairs_images(tmp_path):
    mimic = write_mimic_cxr(tmp_path / "mimic", skip_images=("dddd4444-0001",))
    ids = ["aaaa1111-0001", "bbbb2222-0001", "cccc3333-0001", "dddd4444-0001", "unknown-0"]
    write_chexmask(tmp_path / "chexmask", ids, "dicom_id", "MIMIC-CXR-JPG",
                   dice=[0.9, 0.69, 0.7, 0.95, 0.8], gz=True)
    df = load_manifest("chexmask", tmp_path / "chexmask", source="MIMIC-CXR-JPG",
                       image_root=mimic)
    assert df[C.ID].tolist() == ["aaaa1111-0001", "cccc3333-0001"]
    assert df.attrs["dropped"] == {"low_quality": 1, "not_in_source_metadata": 1,
                                   "missing_image": 1}
    assert df[C.PATIENT].tolist() == ["10000032", "11000011"]
    assert df[C.PATH][0].endswith("files/p10/p10000032/s50414267/aaaa1111-0001.jpg")
    organs = row_organ_map(df.iloc[0])
    assert organs.shape == (12, 16) and set(np.unique(organs)) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="expected 20x16"):
        row_organ_map(df.iloc[0], expected_shape=(20, 16))
    everything = load_chexmask(tmp_path / "chexmask", image_root=mimic, min_dice=None,
                               on_missing="drop")
    assert len(everything) == 3 and "low_quality" not in everything.attrs["dropped"]


def test_chexmask_with_nih_source_and_missing_image_raise(tmp_path):
    nih = write_nih_cxr14(tmp_path / "nih")
    names = ["00000001_000.png", "00000002_001.png", "00000099_000.png"]
    write_chexmask(tmp_path / "cm", names, "Image Index", "ChestX-Ray8", dice=[0.8] * 3)
    df = load_chexmask(tmp_path / "cm", source="ChestX-Ray8", image_root=nih)
    assert df[C.ID].tolist() == names[:2] and df[C.PATIENT].tolist() == ["1", "2"]
    assert df.attrs["dropped"]["missing_image"] == 1
    assert (df[MASK_HEIGHT] == 12).all() and df[RLE_HEART].str.len().gt(0).all()
    with pytest.raises(FileNotFoundError, match="00000099_000.png"):
        load_chexmask(tmp_path / "cm", source="ChestX-Ray8", image_root=nih, on_missing="raise")


def test_chexmask_chexpert_paths(tmp_path):
    rel = "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg"
    write_png(tmp_path / "chexpert" / rel, (4, 4))
    write_chexmask(tmp_path / "cm", [rel], "Path", "CheXpert", dice=[0.9])
    df = load_chexmask(tmp_path / "cm", source="CheXpert", image_root=tmp_path / "chexpert")
    assert df[C.PATIENT].tolist() == ["patient00001"] and df[C.PATH][0].endswith(rel)
    inner = load_chexmask(tmp_path / "cm", source="CheXpert",
                          image_root=tmp_path / "chexpert" / "CheXpert-v1.0")
    assert len(inner) == 1


def test_chexmask_bad_inputs(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(FileNotFoundError, match="VinDr-CXR.csv"):
        load_chexmask(tmp_path, source="VinDr-CXR", image_root=tmp_path / "img")
    with pytest.raises(ValueError, match="image_root"):
        load_chexmask(tmp_path, source="VinDr-CXR")
    with pytest.raises(ValueError, match="unknown CheXmask source"):
        load_chexmask(tmp_path, source="Nope", image_root=tmp_path / "img")
    pd.DataFrame({"image_id": ["a"], "Height": [2]}).to_csv(tmp_path / "VinDr-CXR.csv")
    with pytest.raises(ValueError, match="lacks columns"):
        load_chexmask(tmp_path, source="VinDr-CXR", image_root=tmp_path / "img")

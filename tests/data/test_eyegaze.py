import numpy as np
import pytest

from medmask import columns as C
from medmask.data.eyegaze import (
    anatomy_map,
    gaze_heatmap,
    image_gaze_heatmap,
    load_eyegaze,
    read_bounding_boxes,
    read_fixations,
)
from medmask.data.imageio import image_shape
from medmask.data.manifest import load_manifest
from tests.data.fixtures import EYEGAZE_IMAGES, EYEGAZE_SHAPE, write_eyegaze


def test_manifest_labels_paths_and_fixation_counts(tmp_path):
    write_eyegaze(tmp_path / "egd", tmp_path / "mimic")
    df = load_manifest("eyegaze", tmp_path / "egd", image_root=tmp_path / "mimic")
    assert df[C.ID].tolist() == [r[0] for r in EYEGAZE_IMAGES]
    assert df[C.LABEL_NAME].tolist() == ["CHF", "Normal", "pneumonia"]
    assert df[C.LABEL].tolist() == [1, 0, 2] and df[C.PATIENT][0] == "15628804"
    assert df[C.PATH][0].endswith(f"files/p15/p15628804/s58573295/{EYEGAZE_IMAGES[0][0]}.jpg")
    assert df["n_fixations"].tolist() == [5, 2, 0]
    assert df["n_fixations_outside"].tolist() == [1, 0, 0]
    assert df.attrs["fixations_outside"] == 1 and df.attrs["images_without_fixations"] == 1
    assert image_shape(df[C.PATH][0]) == EYEGAZE_SHAPE


def test_heatmap_matches_the_dataset_script_at_original_resolution(tmp_path):
    ndimage = pytest.importorskip("scipy.ndimage")
    fixations = write_eyegaze(tmp_path / "egd", tmp_path / "mimic")
    xs, ys = fixations[EYEGAZE_IMAGES[0][0]]
    sigma = 7.0  # 150 px is the dataset's; a small sigma keeps the fixture tiny
    heat, ignored = gaze_heatmap(xs, ys, EYEGAZE_SHAPE, sigma=sigma)
    record = np.zeros(EYEGAZE_SHAPE)
    for x, y in zip(xs, ys, strict=True):
        if x >= 0 and y >= 0:
            record[y, x] += 1
    np.testing.assert_allclose(heat, ndimage.gaussian_filter(record, sigma), atol=1e-6)
    assert ignored == 1 and heat.dtype == np.float32
    # a large sigma (kernel wider than the image) still matches scipy's reflect border
    big, _ = gaze_heatmap(xs, ys, EYEGAZE_SHAPE, sigma=30.0)
    np.testing.assert_allclose(big, ndimage.gaussian_filter(record, 30.0), atol=1e-6)


def test_heatmap_scales_with_the_image_and_counts_outside(tmp_path):
    fixations = write_eyegaze(tmp_path / "egd", tmp_path / "mimic")
    xs, ys = fixations[EYEGAZE_IMAGES[1][0]]  # (20, 20) inside, (200, 10) outside
    heat, ignored = gaze_heatmap(xs, ys, EYEGAZE_SHAPE, (30, 40), sigma=8.0, normalize=True)
    assert ignored == 1 and heat.shape == (30, 40)
    assert np.unravel_index(heat.argmax(), heat.shape) == (10, 10) and heat.max() == 1.0
    # sigma scales with the image: the half-width at half-maximum halves with the size
    full, _ = gaze_heatmap([40], [30], EYEGAZE_SHAPE, sigma=6.0, normalize=True)
    half, _ = gaze_heatmap([40], [30], EYEGAZE_SHAPE, (30, 40), sigma=6.0, normalize=True)
    assert (full[30] >= 0.5).sum() == 15 and (half[15] >= 0.5).sum() == 7
    table = read_fixations(tmp_path / "egd")
    empty, none_ignored = image_gaze_heatmap(table, EYEGAZE_IMAGES[2][0], EYEGAZE_SHAPE)
    assert not empty.any() and none_ignored == 0
    with pytest.raises(ValueError, match="differ in length"):
        gaze_heatmap([1, 2], [1], EYEGAZE_SHAPE)


def test_anatomy_map_is_the_union_of_boxes(tmp_path):
    write_eyegaze(tmp_path / "egd", tmp_path / "mimic")
    boxes = read_bounding_boxes(tmp_path / "egd")
    mine = boxes[boxes["dicom_id"] == EYEGAZE_IMAGES[0][0]]
    region = anatomy_map(mine, EYEGAZE_SHAPE)
    expected = np.zeros(EYEGAZE_SHAPE, bool)
    expected[10:50, 5:30] = expected[10:50, 50:75] = expected[30:55, 25:55] = True
    np.testing.assert_array_equal(region, expected)
    lungs = anatomy_map(mine, EYEGAZE_SHAPE, (30, 40), names=["right lung", "left lung"])
    assert lungs.sum() == 2 * 20 * 13 - 0 and not lungs[27, 20]


def test_missing_files_named(tmp_path):
    write_eyegaze(tmp_path / "egd", tmp_path / "mimic")
    df = load_eyegaze(tmp_path / "egd", image_root=tmp_path / "elsewhere")
    assert len(df) == 0 and df.attrs["dropped"] == {"missing_image": 3}
    (tmp_path / "egd" / "fixations.csv").unlink()
    with pytest.raises(FileNotFoundError, match="fixations.csv"):
        load_eyegaze(tmp_path / "egd", image_root=tmp_path / "mimic")

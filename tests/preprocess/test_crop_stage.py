"""The lung-crop stage of option 4 (seg_crop): padding scaled with the side, counted fallback,
image and organ map cropped by one box (plain function, no Ray)."""

from __future__ import annotations

import numpy as np

from medmask import columns as C
from medmask.preprocess import CropToLungs


def test_padding_scales_with_the_side():
    stage = CropToLungs(padding=20)
    assert [stage.padding_at(s) for s in (224, 64, 32, 448)] == [20, 6, 3, 40]


def test_crop_box_fallback_and_alignment():
    organs = np.zeros((2, 32, 32), np.uint8)
    organs[0, 8:24, 6:14] = C.ORGAN_RIGHT_LUNG
    organs[0, 8:24, 18:26] = C.ORGAN_LEFT_LUNG  # box rows 8-24, cols 6-26; + 3 px padding
    images = np.tile(np.arange(32, dtype=np.float32)[None, None, :] / 32, (2, 32, 1))
    out = CropToLungs(padding=20)({C.IMAGE: images, C.ORGANS: organs,
                                   C.ID: np.array(["a", "b"], object)})
    assert out[C.CROP_FALLBACK].tolist() == [False, True]  # image 1 has no lung: whole image
    np.testing.assert_array_equal(out[C.IMAGE][1], images[1])
    np.testing.assert_array_equal(out[C.ORGANS][1], organs[1])
    # image 0: columns 3 .. 29 (26 px) resized to 32: the first output column samples x ~ 3.4
    assert abs(out[C.IMAGE][0, 0, 0] * 32 - (3 + 0.5 * 26 / 32 - 0.5)) < 0.05
    # the organ map went through the same box: its lungs fill the crop minus the padding
    lungs = np.isin(out[C.ORGANS][0], C.LUNG_LABELS)
    rows = np.flatnonzero(lungs.any(1))
    assert rows[0] in (4, 5) and rows[-1] in (26, 27)  # 3 px of 22 -> ~4.4 px of 32
    assert out[C.ORGANS].dtype == np.uint8

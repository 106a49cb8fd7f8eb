import numpy as np
import pytest

from medmask import columns as C
from medmask.data.phantom import generate
from medmask.eval import dice as dice_score
from medmask.segmentation import scaled_kernel, segment_lungs


def test_rule_based_lungs_match_phantom_ground_truth_at_224():
    data = generate(16, 224, seed=0, variant="classic")  # Dice thresholds set on classic
    pred = segment_lungs(data[C.IMAGE])
    truth = np.isin(data[C.ORGANS], C.LUNG_LABELS)
    dice = np.mean([dice_score(pred[i] > 0, truth[i]) for i in range(16)])
    assert dice >= 0.85, f"mean lung Dice {dice:.3f} < 0.85"
    overlap = (pred > 0) & truth
    assert (pred[overlap] == data[C.ORGANS][overlap]).mean() > 0.95  # 1 = image-left lung


def test_kernels_scale_with_image_size():
    assert scaled_kernel(20, 224).shape == (20, 20)
    assert scaled_kernel(20, 448).shape == (40, 40)
    assert scaled_kernel(10, 112).shape == (5, 5)


def test_flat_image_has_no_lungs_and_bad_shape_raises():
    assert segment_lungs(np.zeros((2, 64, 64), np.float32)).sum() == 0
    with pytest.raises(ValueError, match="B, H, W"):
        segment_lungs(np.zeros((64, 64), np.float32))


def test_dice_score_hand_case():  # the one Dice: medmask.eval's, with AHM's eps
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice_score(a, b) == pytest.approx((2 * 1 + 1e-4) / (4 + 1e-4))
    assert dice_score(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_synthetic_chest_lungs_are_the_dark_class_inside_the_body():
    from medmask.segmentation import lung_mask, segment_lungs_single
    from tests.segmentation.synthetic import synthetic_chest

    image, organs = synthetic_chest(224)
    labels = segment_lungs_single(image)
    # the black background outside the body is darker still, but is not a lung
    assert not labels[image == 0].any()
    for code in C.LUNG_LABELS:
        assert dice_score(labels == code, organs == code) > 0.95
    assert (lung_mask(image[None])[0] == (labels > 0)).all()
    assert segment_lungs(image[None]).dtype == np.uint8


def test_kernel_scaling_keeps_dice_at_448():
    data = generate(4, 448, seed=0, variant="classic")
    pred = segment_lungs(data[C.IMAGE])
    truth = np.isin(data[C.ORGANS], C.LUNG_LABELS)
    dice = np.mean([dice_score(pred[i] > 0, truth[i]) for i in range(4)])
    assert dice >= 0.85, f"mean lung Dice {dice:.3f} < 0.85 at 448 px"

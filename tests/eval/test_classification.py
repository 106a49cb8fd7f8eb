import math

import numpy as np
import pytest
import torch

from medmask import columns as C
from medmask.eval.classification import (
    accuracy,
    classification_metrics,
    macro_f1,
    per_class_auc,
    per_class_f1,
    roc_auc,
)


@pytest.mark.parametrize(
    ("scores", "positive", "expected"),
    [
        # Positive 0.5 ties both negatives (1/2 + 1/2), positive 0.9 beats both (2): 3 / 4.
        ([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1], 0.75),
        # Positive 0.4 beats 0.1 and ties 0.4 (1.5), positive 0.8 beats both (2): 3.5 / 4.
        ([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1], 0.875),
        ([0.3, 0.3, 0.3, 0.3], [0, 1, 0, 1], 0.5),  # all tied
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # perfectly inverted
    ],
)
def test_roc_auc_hand_cases_with_ties(scores, positive, expected):
    assert roc_auc(np.array(scores), np.array(positive)) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_nan_without_positives_or_negatives():
    assert math.isnan(roc_auc(np.array([0.1, 0.9]), np.array([0, 0])))
    assert math.isnan(roc_auc(np.array([0.1, 0.9]), np.array([1, 1])))


# 6 samples, 3 classes; argmax predictions [0, 1, 1, 1, 2, 0] against labels [0, 0, 1, 1, 2, 2].
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.2, 0.7],
        [0.5, 0.1, 0.4],
    ]
)
LABELS = np.array([0, 0, 1, 1, 2, 2])


def test_macro_f1_and_accuracy_hand_case():
    # class 0: TP 1, FP 1, FN 1 -> 2/4; class 1: TP 2, FP 1, FN 0 -> 4/5;
    # class 2: TP 1, FP 0, FN 1 -> 2/3.
    f1 = per_class_f1(PROBS, LABELS)
    np.testing.assert_allclose(f1, [0.5, 0.8, 2 / 3], atol=1e-12)
    assert macro_f1(PROBS, LABELS) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3, abs=1e-12)
    assert accuracy(PROBS, LABELS) == pytest.approx(4 / 6, abs=1e-12)


def test_one_vs_rest_auc_hand_case():
    # Class 0 scores: positives {0.7, 0.3}, negatives {0.1, 0.2, 0.1, 0.5}:
    # 0.7 beats all 4, 0.3 beats 3 -> 7 / 8.
    aucs = per_class_auc(PROBS, LABELS)
    assert aucs[0] == pytest.approx(7 / 8, abs=1e-12)
    # Class 1: positives {0.8, 0.5}, negatives {0.2, 0.6, 0.2, 0.1}: 4 + 3 = 7 / 8.
    assert aucs[1] == pytest.approx(7 / 8, abs=1e-12)
    # Class 2: positives {0.7, 0.4}, negatives {0.1, 0.1, 0.1, 0.3}: 4 + 4 = 8 / 8.
    assert aucs[2] == pytest.approx(1.0, abs=1e-12)


def test_classification_metrics_keys_and_values():
    names = ["a", "b", "c"]
    m = classification_metrics(torch.from_numpy(PROBS), torch.from_numpy(LABELS), class_names=names)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["auc/a"] == pytest.approx(7 / 8)
    assert m["auc/c"] == pytest.approx(1.0)
    assert m["f1/b"] == pytest.approx(0.8)
    assert m["auc_mean"] == pytest.approx((7 / 8 + 7 / 8 + 1.0) / 3)
    assert m["auc_nan_count"] == 0 and m["f1_nan_count"] == 0
    assert m["num_samples"] == 6
    assert "label_accuracy" not in m


def test_absent_class_gives_nan_auc_counted_and_left_out_of_the_mean():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1], [0.8, 0.1, 0.1]])
    labels = np.array([0, 1, 0, 1])  # class 2 never present, never predicted
    m = classification_metrics(probs, labels)
    assert math.isnan(m["auc/2"]) and m["auc_nan_count"] == 1
    # class 0: positives {0.6, 0.4}, negatives {0.2, 0.8} -> (1 + 1) / 4 = 0.5;
    # class 1: positives {0.7, 0.1}, negatives {0.3, 0.5} -> (2 + 0) / 4 = 0.5.
    assert m["auc/0"] == pytest.approx(0.5) and m["auc/1"] == pytest.approx(0.5)
    assert m["auc_mean"] == pytest.approx(0.5)
    # F1 of class 2 is undefined (TP = FP = FN = 0): NaN, counted, left out of macro F1.
    # Predictions [0, 1, 1, 0]: class 0 TP 1 FP 1 FN 1 -> 0.5; class 1 the same -> 0.5.
    assert math.isnan(m["f1/2"]) and m["f1_nan_count"] == 1
    assert m["macro_f1"] == pytest.approx(0.5)


def test_covid_class_names_as_keys():
    probs = np.full((4, 4), 0.25)
    probs[np.arange(4), np.arange(4)] = 0.4
    m = classification_metrics(
        probs / probs.sum(1, keepdims=True), np.arange(4), class_names=C.COVID_CLASSES
    )
    assert m["accuracy"] == 1.0
    assert m["auc/Viral Pneumonia"] == 1.0 and m["auc_mean"] == 1.0


def test_multilabel_metrics_hand_case():
    scores = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4], [0.3, 0.8]])
    labels = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    m = classification_metrics(scores, labels, multilabel=True, class_names=["x", "y"])
    # Predictions at 0.5: [[1,0],[1,1],[0,0],[0,1]]: rows 0 and 2 exactly right -> 2/4;
    # 6 of 8 label decisions right.
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["label_accuracy"] == pytest.approx(6 / 8)
    # x: TP 1, FP 1, FN 1 -> 0.5; y: TP 2, FP 0, FN 0 -> 1.
    assert m["f1/x"] == pytest.approx(0.5) and m["f1/y"] == pytest.approx(1.0)
    assert m["macro_f1"] == pytest.approx(0.75)
    # x: positives {0.9, 0.3}, negatives {0.6, 0.1} -> (2 + 1) / 4; y: positives {0.7, 0.8},
    # negatives {0.2, 0.4} -> 1.
    assert m["auc/x"] == pytest.approx(0.75) and m["auc/y"] == pytest.approx(1.0)
    assert m["auc_mean"] == pytest.approx(0.875)
    assert accuracy(scores, labels, multilabel=True) == pytest.approx(0.5)


def test_matches_sklearn_when_available():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs = np.round(probs, 2)  # create ties
    labels = rng.integers(0, 4, 200)
    ours = classification_metrics(probs, labels)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(labels, probs.argmax(1)))
    assert ours["macro_f1"] == pytest.approx(
        metrics.f1_score(labels, probs.argmax(1), average="macro")
    )
    for k in range(4):
        assert ours[f"auc/{k}"] == pytest.approx(metrics.roc_auc_score(labels == k, probs[:, k]))

    scores = np.round(rng.random((150, 5)), 2)
    multi = (rng.random((150, 5)) < 0.3).astype(int)
    ours = classification_metrics(scores, multi, multilabel=True)
    predicted = (scores >= 0.5).astype(int)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(multi, predicted))
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(multi, predicted, average="macro"))
    for k in range(5):
        assert ours[f"auc/{k}"] == pytest.approx(metrics.roc_auc_score(multi[:, k], scores[:, k]))


@pytest.mark.parametrize(
    ("probs", "labels", "kwargs"),
    [
        (np.array([[2.0, -1.0]]), np.array([0]), {}),  # logits, not probabilities
        (np.array([[0.5, 0.5]]), np.array([2]), {}),  # label out of range
        (np.array([[0.5, 0.5]]), np.array([0.5]), {}),  # label not an integer
        (np.array([[0.5, 0.5]]), np.array([0, 1]), {}),  # wrong number of labels
        (np.array([0.5, 0.5]), np.array([0]), {}),  # probs not [N, K]
        (np.array([[0.5, 0.5]]), np.array([0]), {"class_names": ["only one"]}),
        (np.array([[0.5, 0.5]]), np.array([[0, 2]]), {"multilabel": True}),  # not multi-hot
    ],
)
def test_bad_inputs_raise(probs, labels, kwargs):
    with pytest.raises(ValueError):
        classification_metrics(probs, labels, **kwargs)

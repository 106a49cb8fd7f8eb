"""Controls that show the grounding score works (issue 12), on phantoms, in-process.

A small CNN trained where the label lives inside the anatomy (the classic phantom's lesions)
must score > 0 with its 95% interval above 0; the same CNN trained on the ``shortcut_marker``
phantom (the label is a marker outside the anatomy; the lungs show a class drawn independently
of it) must score < 0 with its interval below 0. Measured (seeds 0-2, 768 train / 96 test at
48 px, 10 epochs): inside 0.35-0.39, intervals from >= 0.27; shortcut -0.46 to -0.50,
intervals up to <= -0.41.
"""

from __future__ import annotations

import pytest
import torch

from medmask.data import phantom
from medmask.eval import GroundingSettings, evaluate_grounding
from medmask.train import (
    FitSettings,
    PhantomData,
    fitted_classifier,
    load_classifier,
    torch_threads,
)

FIT = FitSettings(epochs=10)


def _score(variant: str):
    data = PhantomData(variant=variant, size=48, n_train=768, n_test=96)
    fitted = fitted_classifier(data, FIT, cache_dir=None)
    with torch_threads(1):
        result = evaluate_grounding(fitted.model, data.batches("test"), GroundingSettings())
    return fitted, result


def test_a_classifier_that_reads_the_anatomy_scores_above_zero():
    fitted, result = _score(phantom.CLASSIC)
    assert fitted.test_accuracy > 0.5  # it learned the lesions (chance 0.25)
    assert result.qualifying == (0.1, 0.2, 0.3, 0.4)
    assert result.score > 0 and result.ci_low > 0, result.summary()


def test_a_classifier_that_reads_a_marker_outside_the_anatomy_scores_below_zero():
    fitted, result = _score(phantom.SHORTCUT_MARKER)
    assert fitted.test_accuracy > 0.5  # it learned the marker
    assert result.score < 0 and result.ci_high < 0, result.summary()


def test_fitted_classifiers_are_reused_from_the_stage_cache(tmp_path):
    data = PhantomData(size=32, n_train=16, n_test=8)
    fit = FitSettings(epochs=1, batch_size=8)
    first = fitted_classifier(data, fit, tmp_path)
    again = fitted_classifier(data, fit, tmp_path)
    assert not first.cache_hit and again.cache_hit and again.path == first.path
    x = torch.from_numpy(data.split("test")["image"])[:, None]
    with torch.no_grad():
        assert torch.equal(first.model(x), again.model(x))
    other = fitted_classifier(data, FitSettings(epochs=1, batch_size=8, seed=1), tmp_path)
    assert not other.cache_hit and other.path != first.path
    loaded = load_classifier(first.path / "checkpoint.pt")  # the model the checkpoint records
    with torch.no_grad():
        assert torch.equal(loaded(x), first.model(x))
    with pytest.raises(ValueError, match="no classifier checkpoint at"):
        load_classifier(tmp_path / "missing", {"name": "contrastive_cnn_tiny"})
    with pytest.raises(ValueError, match="does not fit model"):
        load_classifier(first.path, {"name": "contrastive_cnn_tiny", "params": {"width": 0.25}})

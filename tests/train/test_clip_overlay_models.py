"""The contour-overlay study's models: the phantom CLIP's captions and vocabulary, its
training and cache through the local-folder loader, and Table 2's eight trained models on a
handful of phantoms (in-process, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmask.data.findings import FindingsDataSettings, findings_splits
from medmask.eval import OverlaySettings, evaluate_clip_overlay
from medmask.models import check_clip_folder
from medmask.train import (
    HeadFitSettings,
    PhantomClipSettings,
    fit_findings_classifier,
    grid_classifiers,
    phantom_clip,
)
from medmask.train._clip_overlay import (
    captions_for,
    clip_loss,
    report,
    validation_score,
    vocabulary,
)

TINY = PhantomClipSettings(n_images=48, image_size=32, patch_size=8, width=32, layers=1,
                           embed_dim=16, epochs=1, batch_size=24, threads=1)


def test_reports_name_each_finding_in_its_zone():
    labels = np.array([[0, 0, 0, 0, 0], [0, 1, 0, 0, 1], [1, 0, 0, 0, 0]], float)
    assert report(labels) == [
        "no acute findings",
        "a chest x-ray showing cardiomegaly in the cardiac silhouette and pleural effusion in "
        "the lung base",
        "a chest x-ray showing atelectasis in the lower zone"]
    assert vocabulary(["a chest x-ray", "no x"])[5:] == ["-", "a", "chest", "no", "ray", "x"]
    overlay = OverlaySettings()
    captions = captions_for(labels, PhantomClipSettings(statement_share=1.0), overlay,
                            np.random.default_rng(0))
    prompts = overlay.prompts()
    assert all(c in prompts for c in captions)
    for row, caption in zip(labels, captions, strict=True):  # present -> positive statement
        k = prompts.index(caption) // 2
        assert (prompts.index(caption) % 2 == 0) == bool(row[k])


def test_identical_captions_share_the_positive_target():
    image = torch.eye(3)
    text = torch.eye(3)
    distinct = clip_loss(image, text, torch.tensor(10.0), ["a", "b", "c"])
    repeated = clip_loss(image, text, torch.tensor(10.0), ["a", "a", "c"])
    logits = 10 * torch.eye(3)
    soft = torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    assert float(distinct) == pytest.approx(float(torch.nn.functional.cross_entropy(
        logits, torch.arange(3))))
    assert float(repeated) == pytest.approx(float(torch.nn.functional.cross_entropy(
        logits, soft)))


def test_phantom_clip_trains_caches_and_feeds_the_ten_cells(tmp_path):
    overlay = OverlaySettings(bootstrap=50)
    clip, folder, hit = phantom_clip(TINY, overlay, tmp_path)
    assert not hit and check_clip_folder(folder)[2].name == "open_clip_pytorch_model.bin"
    again, folder_again, hit_again = phantom_clip(TINY, overlay, tmp_path)
    assert hit_again and folder_again == folder
    assert torch.equal(again.model.state_dict()["visual.conv1.weight"],
                       clip.model.state_dict()["visual.conv1.weight"])
    assert clip.image_size == 32 and clip.mean.flatten().tolist() == pytest.approx(
        [0.485, 0.456, 0.406])
    data = findings_splits(FindingsDataSettings(size=32, n_train=32, n_test=16,
                                                val_fraction=0.25))
    fit = HeadFitSettings(lp_epochs=2, jft_epochs=1, batch_size=8, select="binary", threads=1)
    fitted = grid_classifiers(clip, data.split("train"), data.split("val"), overlay, fit, [0, 1])
    models = fitted.classifiers
    assert len(fitted.selections) == 8 and set(fitted.selections["epoch"]) <= {1, 2}
    assert sorted(models) == [("jft", "original"), ("jft", "overlay"), ("lp", "original"),
                              ("lp", "overlay")]
    assert all(len(v) == 2 for v in models.values())
    # LP keeps the encoder frozen (shared), JFT trains its own copy
    assert models["lp", "original"][0].encoder.model is models["lp", "overlay"][1].encoder.model
    lp_w = models["lp", "original"][0].encoder.model.visual.conv1.weight
    jft_w = models["jft", "original"][0].encoder.model.visual.conv1.weight
    assert torch.equal(lp_w, clip.model.visual.conv1.weight) and not torch.equal(lp_w, jft_w)
    result = evaluate_clip_overlay(clip, data.batches("test", 8, ("image", "organs", "labels")),
                                   models, overlay)
    assert len(result.grid) == 10 and result.grid["seeds"].tolist() == [1, 1] + [2] * 8
    assert result.images == int((data.split("test")["labels"].max(1) > 0.5).sum())


class _Features:
    """An encoder stub: the input rows are the features (LP fits on them)."""

    embed_dim = 8

    def encode(self, inputs, normalize=False):
        return inputs.float()


def _task(n: int, flip: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    y = torch.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0], 1).float()
    return x, (1 - y) if flip else y


def test_validation_picks_an_earlier_epoch_when_the_last_one_is_worse():
    # validation labels are the training labels flipped: the better the head fits, the worse
    # its validation AUC, so the selected epoch must be an early one, restored to its weights
    x, y = _task(96, False, 0)
    xv, yv = _task(64, True, 1)
    fit = HeadFitSettings(lp_epochs=12, lp_lr=0.05, batch_size=32, select="auc", threads=1)
    model, chosen = fit_findings_classifier(_Features(), x, y, "lp", fit, 0, xv, yv)
    assert chosen.epochs == 12 and chosen.epoch < chosen.epochs
    assert chosen.score > chosen.last_score
    assert chosen.score == pytest.approx(max(chosen.curve[0.05]))
    with torch.no_grad():
        probs = torch.sigmoid(model(xv).double()).numpy()
    assert validation_score(probs, yv.numpy(), "auc") == pytest.approx(chosen.score)


def test_validation_picks_the_learning_rate_of_a_grid():
    x, y = _task(96, False, 0)
    xv, yv = _task(64, False, 1)
    fit = HeadFitSettings(lp_epochs=6, lp_lr=[1e-7, 0.1], batch_size=32, select="binary",
                          threads=1)
    assert fit.lp_lrs == (1e-7, 0.1)
    _, chosen = fit_findings_classifier(_Features(), x, y, "lp", fit, 0, xv, yv)
    assert chosen.lr == 0.1 and set(chosen.curve) == {1e-7, 0.1}
    assert max(chosen.curve[0.1]) > max(chosen.curve[1e-7])
    with pytest.raises(ValueError, match="select must be one of"):
        HeadFitSettings(select="loss")

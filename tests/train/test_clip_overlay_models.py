"""The contour-overlay study's models: the phantom CLIP's captions and vocabulary, its
training and cache through the local-folder loader, and Table 2's eight trained models on a
handful of phantoms (in-process, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmask.eval import OverlaySettings, evaluate_clip_overlay
from medmask.models import check_clip_folder
from medmask.train import (
    HeadFitSettings,
    PhantomClipSettings,
    PhantomData,
    grid_classifiers,
    phantom_clip,
)
from medmask.train._clip_overlay import captions_for, clip_loss, report, vocabulary

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
    data = PhantomData(variant="benchmark", size=32, n_train=24, n_test=16)
    fit = HeadFitSettings(lp_epochs=2, jft_epochs=1, batch_size=8, threads=1)
    models = grid_classifiers(clip, data.split("train"), overlay, fit, [0, 1])
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

"""The clip_overlay protocol (Anatomical Masking as Lightweight Visual Priors, Table 2): the
overlay's exact pixels on a tiny organ map, the three readings and their baselines on
hand-counted labels, the zero-shot prompt-pair softmax, and the 10-cell grid's layout and
intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medmask.eval import (
    CELLS,
    OverlaySettings,
    clip_inputs,
    grid_layout,
    list_protocols,
    run_protocol,
    summarize_clip_overlay,
    zero_shot_probabilities,
)
from medmask.eval._clip_overlay import baseline_readings, readings


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """An 8x8 grey image (0.25, one bright 0.8 pixel) with a 4x3 lung and a 4x2 heart."""
    image = torch.full((1, 8, 8), 0.25)
    image[0, 1, 1] = 0.8
    organs = torch.zeros((1, 8, 8), dtype=torch.uint8)
    organs[0, 1:5, 1:4] = 1  # right lung: rows 1-4, cols 1-3
    organs[0, 2:6, 5:7] = 3  # heart: rows 2-5, cols 5-6
    return image, organs


def test_the_overlay_adds_alpha_in_red_on_the_lung_contour_and_blue_on_the_heart():
    image, organs = _tiny()
    settings = OverlaySettings(alpha=0.5, thickness=2)  # 2 px at 224 -> 1 px at 8
    out = clip_inputs(image, organs, 8, "overlay", settings)
    expected = image[:, None].repeat(1, 3, 1, 1).clone()
    lung = torch.zeros(8, 8, dtype=torch.bool)
    lung[1:5, 1:4] = True
    lung[2:4, 2] = False  # the lung's interior: every 3x3 neighbour is lung
    heart = torch.zeros(8, 8, dtype=torch.bool)
    heart[2:6, 5:7] = True  # two pixels wide: all of it is contour
    expected[0, 0][lung] += 0.5
    expected[0, 2][heart] += 0.5
    expected[0, 0, 1, 1] = 1.0  # 0.8 + 0.5 clipped to 1
    assert torch.allclose(out, expected, atol=1e-6)
    assert out[0, 0, 1, 1] == 1.0 and out[0, 1, 1, 1] == pytest.approx(0.8)
    assert out[0, 0, 2, 2] == pytest.approx(0.25)  # interior untouched
    original = clip_inputs(image, organs, 8, "original", settings)
    assert torch.equal(original, image[:, None].repeat(1, 3, 1, 1))


def test_the_contour_width_scales_from_224_px_and_inputs_are_resized_bicubic():
    settings = OverlaySettings(thickness=2)
    assert [settings.thickness_at(s) for s in (224, 448, 64, 32)] == [2, 4, 1, 1]
    image, organs = _tiny()
    out = clip_inputs(image, organs, 16, "original", settings)
    reference = torch.nn.functional.interpolate(image[:, None], size=(16, 16), mode="bicubic",
                                                align_corners=False).clamp(0, 1)
    assert torch.allclose(out, reference.repeat(1, 3, 1, 1))
    overlay = clip_inputs(image, organs, 16, "overlay", settings)
    assert overlay.shape == (1, 3, 16, 16) and float(overlay.max()) <= 1.0
    assert bool((overlay[0, 0] - out[0, 0] > 0.7).any())  # alpha 1 on the red lung band
    assert torch.equal(overlay[0, 1], out[0, 1])  # no green structure
    with pytest.raises(ValueError, match="condition must be one of"):
        clip_inputs(image, organs, 8, "masked", settings)


def test_three_readings_and_baselines_on_hand_counted_labels():
    targets = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], float)
    probs = np.array([[0.9, 0.2, 0.1],   # all right; top finding 0 positive
                      [0.1, 0.6, 0.4],   # finding 2 wrong; top finding 1 positive
                      [0.7, 0.3, 0.8],   # findings 1, 2 wrong; top finding 2 negative
                      [0.2, 0.1, 0.5]])  # all right (0.5 is positive); top 2 positive
    out = readings(probs, targets)
    assert out["binary"].tolist() == pytest.approx([1, 2 / 3, 1 / 3, 1])
    assert out["exact"].tolist() == [1, 0, 0, 1]
    assert out["top1"].tolist() == [1, 1, 0, 1]
    base = baseline_readings(targets)
    # prevalence (0.5, 0.5, 0.5): no finding above 0.5, so the constant predictor is all-negative
    assert base["all_negative"] == pytest.approx({"binary": 0.5, "exact": 0.0, "top1": 0.0})
    assert base["prevalence"]["binary"] == pytest.approx(0.5)
    assert base["prevalence"]["top1"] == pytest.approx(0.5)  # always finding 0: 2 of 4
    skewed = baseline_readings(np.array([[1, 0], [1, 1], [1, 0]], float))
    assert skewed["prevalence"] == pytest.approx({"binary": 5 / 6, "exact": 2 / 3, "top1": 1.0})
    assert skewed["all_negative"]["binary"] == pytest.approx(1 / 3)


class _FakeClip:
    """Features fixed by hand: image i is e_i-ish, prompts pick their directions."""

    image_size = 8

    def __init__(self) -> None:
        self.model = torch.nn.Module()
        self.model.logit_scale = torch.nn.Parameter(torch.tensor(np.log(10.0)))

    def encode_text(self, texts, normalize=False):
        # finding 0: positive along x, negative along y; finding 1: positive z, negative x
        return torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])

    def encode(self, images, normalize=False):
        return torch.tensor([[1.0, 0, 0], [0.6, 0, 0.8]])[: len(images)]


def test_zero_shot_is_the_softmax_over_each_findings_prompt_pair():
    settings = OverlaySettings(findings=("Edema", "Atelectasis"))
    assert settings.prompts() == ["a chest x-ray showing edema",
                                  "a chest x-ray showing no edema",
                                  "a chest x-ray showing atelectasis",
                                  "a chest x-ray showing no atelectasis"]
    p = zero_shot_probabilities(_FakeClip(), torch.zeros(2, 3, 8, 8), settings)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731 (softmax of a pair)
    expected = [[sigmoid(10 * (1 - 0)), sigmoid(10 * (0 - 1))],
                [sigmoid(10 * (0.6 - 0)), sigmoid(10 * (0.8 - 0.6))]]
    assert p.numpy() == pytest.approx(np.array(expected))


def _grid_probs(targets: np.ndarray, seeds: int = 3) -> dict:
    rng = np.random.default_rng(0)
    probs = {}
    for method, train, test in CELLS:
        for seed in range(1 if method == "zero_shot" else seeds):
            noise = 0.3 if test == "overlay" else 0.45
            probs[method, train, test, seed] = np.clip(
                targets + rng.normal(0, noise, targets.shape), 0, 1)
    return probs


def test_the_grid_has_table_2s_ten_cells_layout_intervals_and_gains():
    rng = np.random.default_rng(1)
    targets = (rng.random((200, 5)) < 0.4).astype(float)
    settings = OverlaySettings(bootstrap=300)
    result = summarize_clip_overlay(_grid_probs(targets), targets, settings)
    grid = result.grid
    assert len(CELLS) == 10 and len(grid) == 10
    assert list(zip(grid["method"], grid["train"].fillna("-"), grid["test"], strict=True)) == [
        (m, t or "-", s) for m, t, s in CELLS]
    assert grid["seeds"].tolist() == [1, 1] + [3] * 8
    for reading in ("binary", "exact", "top1"):
        assert (grid[f"{reading}_low"] <= grid[f"{reading}_mean"]).all()
        assert (grid[f"{reading}_mean"] <= grid[f"{reading}_high"]).all()
    spread = grid["binary_seed_sd"]
    assert (spread.iloc[2:] > 0).all() and (spread.iloc[:2] == 0).all()
    cells = result.cells
    first = cells[(cells["method"] == "lp") & (cells["train"] == "original")
                  & (cells["test"] == "overlay")]
    assert grid.loc[3, "binary_mean"] == pytest.approx(first["binary"].mean())
    assert {f"auc/{n}" for n in settings.findings} <= set(cells.columns)
    # less noise on overlay inputs: every row gains at test time, with an interval above 0
    gains = result.gains
    assert len(gains) == 5 and (gains["binary_gain"] > 0).all() and (gains["binary_low"] > 0).all()
    layout = result.layout()
    assert layout.columns.tolist() == ["method", "training data", "test original",
                                       "test overlay"]
    assert layout["training data"].tolist() == ["-", "original", "overlay", "original",
                                                "overlay"]
    mean, low, high = grid.loc[9, ["binary_mean", "binary_low", "binary_high"]]
    assert layout.loc[4, "test overlay"] == f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    assert grid_layout(grid.iloc[:2], "top1").loc[1, "test original"] == ""


def test_the_protocol_is_registered_and_fails_clearly():
    assert "clip_overlay" in list_protocols()
    image, organs = _tiny()
    batch = {"image": image, "organs": organs, "labels": torch.tensor([[1.0, 0, 0, 0, 0]])}
    with pytest.raises(ValueError, match="needs a CLIP"):
        run_protocol("clip_overlay", [batch])
    with pytest.raises(ValueError, match="unknown clip_overlay parameter"):
        run_protocol("clip_overlay", [batch], model=_FakeClip(), ratio=0.2)
    with pytest.raises(ValueError, match="needs columns \\['labels'\\]"):
        run_protocol("clip_overlay", [{"image": image, "organs": organs}], model=_FakeClip())
    with pytest.raises(ValueError, match="no test image has a positive"):
        run_protocol("clip_overlay", [{**batch, "labels": torch.zeros(1, 5)}],
                     model=_FakeClip())
    with pytest.raises(ValueError, match="statistics must be one of"):
        OverlaySettings(statistics="cifar")


def test_the_protocol_table_holds_the_zero_shot_cells():
    image, organs = _tiny()
    two = {"image": image.repeat(2, 1, 1), "organs": organs.repeat(2, 1, 1),
           "labels": torch.tensor([[1.0, 0], [0.0, 1]])}
    clip = _FakeClip()
    clip.with_statistics = lambda mean, std: clip
    table = run_protocol("clip_overlay", [two], model=clip, findings=["Edema", "Atelectasis"],
                         bootstrap=50)
    assert isinstance(table, pd.DataFrame) and table["test"].tolist() == ["original", "overlay"]
    # image 0: edema yes, atelectasis no (both right); image 1: edema yes (wrong),
    # atelectasis yes (right)
    assert table["binary_mean"].tolist() == [0.75, 0.75]
    assert table.attrs["images"] == 2 and len(table.attrs["layout"]) == 5

"""The grounding protocol: exact drops and score on hand-computed cases, qualifying ratios,
the bootstrap interval, and the errors that name bad values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from medmask.eval import (
    GroundingSettings,
    evaluate_grounding,
    grounding_score,
    run_protocol,
)

SIZE = 20


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class RegionMeans(torch.nn.Module):
    """logits [a * mean(x on A) + b * mean(x off A) - c, 0]: p(label 0) = sigmoid(that)."""

    def __init__(self, anatomy: torch.Tensor, a: float, b: float, c: float) -> None:
        super().__init__()
        self.inside = anatomy.float()
        self.a, self.b, self.c = a, b, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, 0]
        inside = (x * self.inside).sum((1, 2)) / self.inside.sum()
        outside = (x * (1 - self.inside)).sum((1, 2)) / (1 - self.inside).sum()
        z = self.a * inside + self.b * outside - self.c
        return torch.stack([z, torch.zeros_like(z)], 1)


def _batch(anatomy: torch.Tensor, n: int = 3) -> dict[str, torch.Tensor]:
    ramp = torch.linspace(1.0, 1.1, SIZE * SIZE).reshape(SIZE, SIZE)  # no ties in the heat
    gaze = anatomy.float() * ramp + 0.01 * ramp  # hottest inside the anatomy
    return {"image": torch.ones(n, SIZE, SIZE), "label": torch.zeros(n, dtype=torch.long),
            "gaze": gaze.expand(n, SIZE, SIZE).clone(),
            "organs": anatomy.to(torch.uint8).expand(n, SIZE, SIZE).clone()}


def test_drops_and_score_match_the_hand_computation():
    anatomy = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    anatomy[:, :10] = True  # 200 of 400 pixels
    model = RegionMeans(anatomy, a=4.0, b=1.0, c=2.5)  # z = 4 in + out - 2.5: 2.5 unmasked
    ratios = (0.1, 0.2, 0.3, 0.4)
    result = evaluate_grounding(model, [_batch(anatomy)], GroundingSettings(ratios=ratios))
    p0 = _sigmoid(2.5)
    expected_score = []
    for r in ratios:
        k = math.floor(r * 400 + 1e-9)  # 40, 80, 120, 160 pixels; the free area is 200
        anat = _sigmoid(2.5 - 4 * k / 200)  # top gaze pixels: all inside the anatomy
        non = _sigmoid(2.5 - k / 200)  # rectangles reach k exactly, all outside
        rows = result.table[result.table["ratio"] == r].set_index("condition")
        assert rows.loc["original", "drop"] == 0.0
        assert rows.loc["anatomical", "drop"] == pytest.approx(p0 - anat, abs=1e-6)
        assert rows.loc["non_anatomical", "drop"] == pytest.approx(p0 - non, abs=1e-6)
        assert rows.loc["matched_anatomical", "drop"] == pytest.approx(p0 - anat, abs=1e-6)
        assert rows.loc["non_anatomical", "achieved_mean"] == pytest.approx(k / 400)
        assert rows.loc["matched_anatomical", "achieved_mean"] == pytest.approx(k / 400)
        # accuracy: z = 2.5 - 4k/200 < 0 only at k = 160 (anatomical), never non-anatomically
        anat_wrong = 1.0 if 2.5 - 4 * k / 200 < 0 else 0.0
        assert rows.loc["anatomical", "accuracy_drop"] == anat_wrong
        assert rows.loc["non_anatomical", "accuracy_drop"] == 0.0
        expected_score.append((p0 - anat) - (p0 - non))
    assert result.qualifying == ratios and result.table["qualifies"].all()
    assert result.score == pytest.approx(np.mean(expected_score), abs=1e-6)
    # three identical images: every resample has the same mean
    assert result.ci_low == pytest.approx(result.score) == pytest.approx(result.ci_high)
    assert result.images == 3 and result.summary()["qualifying_ratios"] == list(ratios)


def test_ratios_without_room_for_rectangles_do_not_qualify_and_match_the_achieved_area():
    anatomy = torch.ones(SIZE, SIZE, dtype=torch.bool)
    anatomy[:3, :] = False  # 60 free pixels (15%)
    model = RegionMeans(anatomy, a=1.0, b=1.0, c=0.0)
    result = evaluate_grounding(model, [_batch(anatomy, 2)],
                                GroundingSettings(ratios=(0.1, 0.2, 0.3)))
    table = result.table.set_index(["ratio", "condition"])
    assert table.loc[(0.1, "non_anatomical"), "achieved_mean"] == pytest.approx(0.1)
    short = table.loc[(0.2, "non_anatomical"), "achieved_mean"]
    assert short <= 0.15 + 1e-12  # at most the free area, below 0.8 * 0.2 = 0.16
    assert result.qualifying == (0.1,)
    assert table.loc[(0.1, "non_anatomical"), "qualifies"]
    assert not table.loc[(0.2, "anatomical"), "qualifies"]
    # matched area: the anatomical condition re-run at what the rectangles reached
    assert table.loc[(0.2, "matched_anatomical"), "achieved_mean"] == pytest.approx(short)
    assert table.loc[(0.2, "anatomical"), "achieved_mean"] == pytest.approx(0.2)


def test_bootstrap_interval_of_two_images_is_exact():
    # per-image differences 0 and 1: resampled means are 0, 0.5, 1 with probability 1/4, 1/2,
    # 1/4, so the 2.5th and 97.5th percentiles of 2,000 resamples are 0 and 1.
    rows = []
    for image, diff in ((0, 0.0), (1, 1.0)):
        for ratio in (0.1, 0.2):
            rows.append({"image": image, "ratio": ratio, "condition": "non_anatomical",
                         "drop": 0.25})
            rows.append({"image": image, "ratio": ratio, "condition": "matched_anatomical",
                         "drop": 0.25 + diff})
    per_image = pd.DataFrame(rows)
    assert grounding_score(per_image, (0.1, 0.2)) == (0.5, 0.0, 1.0)
    score, low, high = grounding_score(per_image, ())
    assert math.isnan(score) and math.isnan(low) and math.isnan(high)


def test_registry_entry_returns_the_table_with_the_score_in_attrs():
    anatomy = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    anatomy[:, :10] = True
    model = RegionMeans(anatomy, a=1.0, b=4.0, c=2.5)  # reads the outside: a shortcut
    table = run_protocol("grounding", [_batch(anatomy)], model=model, ratios=[0.2],
                         seeds=[0, 1, 2, 3], bootstrap=100)
    assert list(table["condition"]) == ["original", "anatomical", "non_anatomical",
                                        "matched_anatomical"]
    p0, k = _sigmoid(2.5), 80
    expected = (p0 - _sigmoid(2.5 - k / 200)) - (p0 - _sigmoid(2.5 - 4 * k / 200))
    assert table.attrs["score"] == pytest.approx(expected, abs=1e-6) and expected < 0
    assert table.attrs["qualifying_ratios"] == [0.2] and table.attrs["bootstrap"] == 100


def test_bad_settings_and_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"at least 4 distinct rectangle seeds, got \[0, 1, 1\]"):
        GroundingSettings(seeds=(0, 1, 1))
    with pytest.raises(ValueError, match="gaze_threshold must be in \\(0, 1\\].*got 0.0"):
        GroundingSettings(anatomy="gaze", gaze_threshold=0.0)
    with pytest.raises(ValueError, match="anatomy must be one of .*got 'lungs'"):
        GroundingSettings(anatomy="lungs")
    with pytest.raises(ValueError, match=r"ratios must be in \(0, 1\), got 0.0"):
        GroundingSettings(ratios=(0.0, 0.2))
    with pytest.raises(ValueError, match=r"unknown grounding parameter\(s\) \['ratio'\]"):
        run_protocol("grounding", [], model=None, ratio=0.2)
    anatomy = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    batch = _batch(anatomy)
    del batch["organs"]
    model = RegionMeans(anatomy | True, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"needs columns \['organs'\]"):
        evaluate_grounding(model, [batch])
    with pytest.raises(ValueError, match="no images"):
        evaluate_grounding(model, [])


def test_gaze_anatomy_is_thresholded_not_positive():
    anatomy = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    anatomy[:, :10] = True
    batch = _batch(anatomy)
    del batch["organs"]  # the anatomy comes from the heatmap (> 0 everywhere here)
    model = RegionMeans(anatomy, a=4.0, b=1.0, c=2.5)
    result = evaluate_grounding(model, [batch], GroundingSettings(
        ratios=(0.2,), anatomy="gaze", gaze_threshold=0.5))
    rows = result.table.set_index("condition")
    # thresholded at half the maximum the anatomy is the left half: rectangles fit outside it
    assert rows.loc["non_anatomical", "achieved_mean"] == pytest.approx(0.2)
    assert rows.loc["non_anatomical", "drop"] == pytest.approx(
        _sigmoid(2.5) - _sigmoid(2.5 - 80 / 200), abs=1e-6)


def test_grounding_figure_plots_drops_against_the_achieved_area():
    from medmask.eval.figures import grounding_figure

    anatomy = torch.ones(SIZE, SIZE, dtype=torch.bool)
    anatomy[:3, :] = False
    model = RegionMeans(anatomy, a=1.0, b=1.0, c=0.0)
    result = evaluate_grounding(model, [_batch(anatomy, 2)],
                                GroundingSettings(ratios=(0.1, 0.2), bootstrap=10))
    figure = grounding_figure(result.table)
    lines = {line.get_label(): line for line in figure.axes[0].lines}
    non = result.table[result.table["condition"] == "non_anatomical"]
    assert list(lines["non anatomical"].get_xdata()) == sorted(non["achieved_mean"])
    assert list(lines["anatomical"].get_xdata()) == pytest.approx([0.1, 0.2])

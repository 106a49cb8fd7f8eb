"""Visual grounding: does a classifier rely on the anatomy? (protocol ``grounding``)

Source: Mask Creation Methodology, "Inference: Anatomical-Specific Masking": anatomical
masking (the top-activated pixels of the gaze heatmap, area r of the image) against
non-anatomical masking (black rectangles that never overlap the anatomy, sampled until the
area r or a sampling limit is reached), r in {0.1, 0.2, 0.3, 0.4}. "A model that truly relies
on anatomical evidence should show performance degradation under anatomical masking, while
remaining relatively stable under non-anatomical masking." The score below (issue 12) makes
that a number.

For image i with true label y_i and target area r (p = the softmax probability of y_i):

- drop_anat(i, r) = p(x_i) - p(anatomical(x_i, r)) (exact area: floor(r H W) pixels);
- drop_non(i, r) = (1/S) sum_s [p(x_i) - p(non_anatomical_s(x_i, r))] over S >= 4 rectangle
  seeds, and a_non(i, r) = (1/S) sum_s achieved_s(i, r), the area those rectangles reached;
- drop_match(i, r) = p(x_i) - p(anatomical(x_i, a_non(i, r))): the anatomical condition
  re-run at the area non-anatomical masking achieved on that image (matched area);
- r qualifies when mean_i a_non(i, r) >= 0.8 r (the rectangles found room);
- **score** = mean over images i and qualifying r of [drop_match(i, r) - drop_non(i, r)],
  with a 95% percentile interval from 2,000 bootstrap resamples of the images (each image's
  mean over the qualifying r resampled as one unit).

A positive score: the model degrades more when (the same area of) anatomy is masked than when
the rest of the image is, i.e. it looks at the anatomy; a negative one: it reads something
outside the anatomy (a shortcut). Accuracy drops are reported beside the probability drops.
Anatomy (what rectangles avoid) is the organ map (``anatomy="organs"``, phantoms, CheXmask),
the batch's ``anatomy`` column (``"boxes"``: the union of EYEGAZE anatomy boxes,
:func:`medmask.data.eyegaze.anatomy_map`) or the gaze heatmap thresholded at
``gaze_threshold`` of its maximum (``"gaze"``; a blurred heatmap is > 0 almost everywhere, so
never ``> 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from medmask import columns as C
from medmask.masking import (
    ANATOMY_LABELS,
    anatomical_mask,
    anatomy_region,
    check_ratio,
    non_anatomical_mask,
)

ANATOMY_SOURCES = ("organs", "boxes", "gaze")
CONDITIONS = ("original", "anatomical", "non_anatomical", "matched_anatomical")
MIN_SEEDS = 4
Classifier = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GroundingSettings:
    """The grounding protocol's parameters (``configs/eval/grounding.yaml``).

    Attributes:
        ratios: target areas r (fractions of the image), each in (0, 1).
        seeds: rectangle seeds of the non-anatomical condition (at least 4).
        anatomy: ``"organs"`` | ``"boxes"`` | ``"gaze"`` (module docstring).
        gaze_threshold: share of the heatmap's maximum for ``anatomy="gaze"``, in (0, 1].
        organ_labels: the organ-map labels that count as anatomy (lungs and heart).
        qualify: r qualifies when the mean achieved non-anatomical area is >= qualify * r.
        bootstrap: resamples of the images for the interval.
        confidence: the interval's coverage.
        bootstrap_seed: seed of the resampling.
        max_tries: the rectangle sampling limit (candidates per image).
        side_range: rectangle sides as fractions of the image side.
    """

    ratios: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    anatomy: str = "organs"
    gaze_threshold: float = 0.2
    organ_labels: tuple[int, ...] = ANATOMY_LABELS
    qualify: float = 0.8
    bootstrap: int = 2000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    max_tries: int = 4096
    side_range: tuple[float, float] = (0.02, 0.3)

    def __post_init__(self) -> None:
        if not self.ratios:
            raise ValueError("grounding needs at least one ratio")
        for ratio in self.ratios:
            if check_ratio(ratio) == 0.0:
                raise ValueError(f"grounding ratios must be in (0, 1), got {ratio!r}")
        if len(set(self.seeds)) < MIN_SEEDS:
            raise ValueError(f"the non-anatomical condition averages over at least {MIN_SEEDS} "
                             f"distinct rectangle seeds, got {list(self.seeds)}")
        if self.anatomy not in ANATOMY_SOURCES:
            raise ValueError(f"anatomy must be one of {ANATOMY_SOURCES}, got {self.anatomy!r}")
        if not 0.0 < float(self.gaze_threshold) <= 1.0:
            raise ValueError(f"gaze_threshold must be in (0, 1] of the heatmap's maximum, got "
                             f"{self.gaze_threshold!r} (a blurred heatmap is > 0 almost "
                             "everywhere)")
        if not 0.0 < float(self.qualify) <= 1.0:
            raise ValueError(f"qualify must be in (0, 1], got {self.qualify!r}")
        if int(self.bootstrap) < 1:
            raise ValueError(f"bootstrap must be >= 1 resample, got {self.bootstrap!r}")
        if not 0.0 < float(self.confidence) < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")

    @classmethod
    def from_params(cls, **params: Any) -> GroundingSettings:
        """Settings from plain parameters (a Hydra mapping); unknown keys are named."""
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ValueError(f"unknown grounding parameter(s) {unknown}; valid: {sorted(valid)}")
        for key in ("ratios", "seeds", "organ_labels", "side_range"):
            if key in params:
                params[key] = tuple(params[key])
        return cls(**params)


@dataclass(frozen=True)
class GroundingResult:
    """What :func:`evaluate_grounding` measured.

    Attributes:
        table: one row per (ratio, condition): achieved area (mean, min), mean probability of
            the true label, its drop, accuracy and accuracy drop, whether r qualifies.
        per_image: one row per (image, ratio, condition): achieved area, probability of the
            true label, drop, correct (the non-anatomical rows averaged over the seeds).
        score: the grounding score (NaN when no r qualifies).
        ci_low, ci_high: its bootstrap interval.
        qualifying: the ratios that entered the score.
        images: the number of images.
    """

    table: pd.DataFrame
    per_image: pd.DataFrame
    score: float
    ci_low: float
    ci_high: float
    qualifying: tuple[float, ...]
    images: int
    settings: GroundingSettings = field(default_factory=GroundingSettings)

    def summary(self) -> dict[str, Any]:
        """The score, its interval and what it was computed over (JSON-able)."""
        return {"score": self.score, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "confidence": self.settings.confidence, "bootstrap": self.settings.bootstrap,
                "qualifying_ratios": list(self.qualifying), "images": self.images,
                "seeds": list(self.settings.seeds), "anatomy": self.settings.anatomy}


def true_label_probability(model: Classifier, images: torch.Tensor,
                           labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probability of the true label and correctness, float64 [B] and bool [B].

    ``images`` [B, H, W] or [B, C, H, W] (a channel axis is added to [B, H, W]).
    """
    x = images[:, None] if images.ndim == 3 else images
    with torch.no_grad():
        logits = model(x.float())
    if logits.ndim != 2 or logits.shape[0] != len(labels):
        raise ValueError(f"the model must return logits [B, classes] for {len(labels)} images, "
                         f"got shape {tuple(logits.shape)}")
    probs = torch.softmax(logits.double(), dim=1)
    labels = labels.long().to(probs.device)
    return probs.gather(1, labels[:, None])[:, 0].cpu(), (probs.argmax(1) == labels).cpu()


def _region(batch: Mapping[str, torch.Tensor], settings: GroundingSettings) -> torch.Tensor:
    if settings.anatomy == "organs":
        return anatomy_region(organs=batch[C.ORGANS], labels=settings.organ_labels)
    if settings.anatomy == "boxes":
        return batch[C.ANATOMY].to(torch.bool).cpu()
    return anatomy_region(heatmap=batch[C.GAZE], threshold=settings.gaze_threshold)


def _required(settings: GroundingSettings) -> tuple[str, ...]:
    source = {"organs": C.ORGANS, "boxes": C.ANATOMY, "gaze": C.GAZE}[settings.anatomy]
    return tuple(dict.fromkeys((C.IMAGE, C.LABEL, C.GAZE, source)))


def _as_tensors(batch: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    missing = [k for k in keys if k not in batch or batch[k] is None]
    if missing:
        raise ValueError(f"the grounding protocol needs columns {missing}; the batch has "
                         f"{sorted(batch)}")
    return {k: torch.as_tensor(np.asarray(batch[k])) if not isinstance(batch[k], torch.Tensor)
            else batch[k] for k in keys}


def _batch_records(model: Classifier, batch: dict[str, torch.Tensor], index: int,
                   settings: GroundingSettings, offset: int) -> list[pd.DataFrame]:
    """Per-image rows of one batch, for every ratio and condition."""
    images, labels, heat = batch[C.IMAGE].float(), batch[C.LABEL], batch[C.GAZE]
    size = tuple(images.shape[-2:])
    region = _region(batch, settings)
    if tuple(region.shape[-2:]) != size:
        raise ValueError(f"the anatomy is {tuple(region.shape[-2:])}, the images {size}")
    ids = np.arange(offset, offset + len(images))
    base_p, base_ok = true_label_probability(model, images, labels)
    frames = []

    def frame(ratio: float, condition: str, achieved: torch.Tensor, p: torch.Tensor,
              ok: torch.Tensor) -> pd.DataFrame:
        return pd.DataFrame({"image": ids, "ratio": ratio, "condition": condition,
                             "achieved": achieved.double().numpy(), "prob_true": p.numpy(),
                             "drop": (base_p - p).numpy(), "correct": ok.double().numpy()})

    def anatomical(ratio: Any, seed: int) -> tuple[torch.Tensor, ...]:
        tie_order = torch.Generator().manual_seed(seed)
        mask, achieved = anatomical_mask(heat, ratio, size=size, generator=tie_order)
        return (achieved, *true_label_probability(model, images * ~mask, labels))

    for ratio in settings.ratios:
        frames.append(frame(ratio, "original", torch.zeros(len(images)), base_p, base_ok))
        frames.append(frame(ratio, "anatomical", *anatomical(ratio, index)))
        areas, probs, oks = [], [], []
        for seed in settings.seeds:
            rectangles = torch.Generator().manual_seed(int(seed) * 1_000_003 + index)
            mask, achieved = non_anatomical_mask(region, ratio, rectangles, settings.max_tries,
                                                 side_range=settings.side_range)
            p, ok = true_label_probability(model, images * ~mask, labels)
            areas.append(achieved), probs.append(p), oks.append(ok.double())
        area = torch.stack(areas).mean(0)
        frames.append(frame(ratio, "non_anatomical", area, torch.stack(probs).mean(0),
                            torch.stack(oks).mean(0)))
        frames.append(frame(ratio, "matched_anatomical", *anatomical(area, index)))
    return frames


def evaluate_grounding(model: Classifier, batches: Iterable[Mapping[str, Any]],
                       settings: GroundingSettings | None = None) -> GroundingResult:
    """Run the grounding protocol (module docstring) of ``model`` over ``batches``.

    Args:
        model: images [B, 1, H, W] -> logits [B, classes] (single-label; put it in eval mode).
        batches: mappings with ``image`` [B, H, W], ``label`` [B], ``gaze`` [B, H', W'] and the
            anatomy source (``organs`` or ``anatomy``).
        settings: :class:`GroundingSettings` (the defaults: r 0.1-0.4, 4 seeds, organs).

    Raises:
        ValueError: a missing column (named), no images, bad settings.
    """
    settings = settings or GroundingSettings()
    keys = _required(settings)
    frames: list[pd.DataFrame] = []
    offset = 0
    if isinstance(model, torch.nn.Module):
        model.eval()
    for index, raw in enumerate(batches):
        batch = _as_tensors(raw, keys)
        frames.extend(_batch_records(model, batch, index, settings, offset))
        offset += len(batch[C.IMAGE])
    if offset == 0:
        raise ValueError("the grounding protocol got no images")
    per_image = pd.concat(frames, ignore_index=True)
    return summarize_grounding(per_image, settings)


def summarize_grounding(per_image: pd.DataFrame,
                        settings: GroundingSettings | None = None) -> GroundingResult:
    """The table, the qualifying ratios, the score and its bootstrap interval from the
    per-image rows (columns image, ratio, condition, achieved, prob_true, drop, correct)."""
    settings = settings or GroundingSettings()
    grouped = per_image.groupby(["ratio", "condition"], sort=False)
    table = grouped.agg(achieved_mean=("achieved", "mean"), achieved_min=("achieved", "min"),
                        prob_true=("prob_true", "mean"), drop=("drop", "mean"),
                        accuracy=("correct", "mean"), images=("image", "nunique")).reset_index()
    original = table[table["condition"] == "original"].set_index("ratio")["accuracy"]
    table["accuracy_drop"] = table["ratio"].map(original) - table["accuracy"]
    non = table[table["condition"] == "non_anatomical"].set_index("ratio")["achieved_mean"]
    qualifying = tuple(float(r) for r in settings.ratios
                       if non.get(r, 0.0) >= settings.qualify * float(r) - 1e-12)
    table["qualifies"] = table["ratio"].isin(qualifying)
    order = {c: k for k, c in enumerate(CONDITIONS)}
    table = table.sort_values(["ratio", "condition"], key=lambda s: s.map(order)
                              if s.name == "condition" else s, kind="stable")
    table = table.reset_index(drop=True)
    images = int(per_image["image"].nunique())
    score, low, high = grounding_score(per_image, qualifying, settings.bootstrap,
                                       settings.confidence, settings.bootstrap_seed)
    return GroundingResult(table, per_image, score, low, high, qualifying, images, settings)


def grounding_score(per_image: pd.DataFrame, qualifying: Sequence[float], bootstrap: int = 2000,
                    confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """mean over images and qualifying r of (drop_match - drop_non), and its percentile
    bootstrap interval over images (NaNs when no ratio qualifies)."""
    if not qualifying:
        return float("nan"), float("nan"), float("nan")
    per_image_mean = image_differences(per_image, qualifying)
    rng = np.random.default_rng(seed)
    resampled = per_image_mean[rng.integers(0, len(per_image_mean),
                                            (int(bootstrap), len(per_image_mean)))].mean(1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return float(per_image_mean.mean()), float(low), float(high)


def image_differences(per_image: pd.DataFrame, qualifying: Sequence[float]) -> np.ndarray:
    """Per image (in image order), the mean over the qualifying r of drop_match - drop_non:
    the units the score averages and the bootstrap resamples (empty when none qualifies)."""
    if not qualifying:
        return np.zeros(0)
    rows = per_image[per_image["ratio"].isin(list(qualifying))]
    drops = rows.pivot_table(index=["image", "ratio"], columns="condition", values="drop")
    difference = drops["matched_anatomical"] - drops["non_anatomical"]
    return difference.groupby(level="image").mean().to_numpy(np.float64)

"""Anatomical contour overlays as visual priors for a CLIP image encoder (protocol
``clip_overlay``).

Source: "Anatomical Masking as Lightweight Visual Priors for Chest X-ray Classification"
(Park, Lee, Kim): BiomedCLIP on MIMIC-CXR, 5 findings (Atelectasis, Cardiomegaly,
Consolidation, Edema, Pleural Effusion) as multi-label BCE (eq. 2), samples with at least one
positive; images at 224 px (bicubic), values in [0, 1], ImageNet channel statistics (Sec.
4.1); the overlay ``x~ = x + alpha * Contour(m)`` (eq. 1) on the RGB image, lungs red and
heart blue (:func:`medmask.masking.contour_overlay`), clipped to [0, 1]. The paper states
neither alpha nor the contour width: ours are ``alpha = 1`` and 2 px at 224 px (scaled with
the input side, at least 1 px), stated in every table.

Table 2 is a grid of 10 cells (:data:`CELLS`): zero-shot, linear probing (LP: frozen encoder,
a linear head) and joint fine-tuning (JFT: encoder and head), each LP/JFT model trained on
original or overlay images, and every model tested on original and overlay images.

Zero-shot (Sec. 4.2 gives only "a chest X-ray showing [disease]"; the negative prompt is our
choice): per finding k, p_k = softmax(s * [cos(z, t_k+), cos(z, t_k-)])_0 with s CLIP's
logit scale; fine-tuned models give sigmoids. Both are thresholded at 0.5.

The paper's "accuracy averaged across all five disease categories" is ambiguous (its
0.24-0.45 lie below what an all-negative predictor scores on per-finding binary accuracy on
samples with at least one positive), so three readings are reported, each a mean over test
images of a per-image score:

- ``binary``: mean over the K findings of [yhat_k == y_k] (per-finding binary accuracy);
- ``exact``: [yhat_k == y_k for every k] (exact match, all five right);
- ``top1``: y_{argmax_k p_k} (the highest-scoring finding is positive);

beside the same readings of two baselines on the same test images: all-negative (yhat = 0;
it names no finding, so its top-1 is 0) and prevalence (yhat_k = [prevalence_k > 0.5] and,
for top-1, always the most prevalent finding). Each cell's value is the mean over its seeds
with a 95% bootstrap interval over test images (:func:`medmask.eval.paired_bootstrap`
against zero: 2,000 resamples within every seed), the seeds' spread beside it; the test-time
gain of the overlay (overlay-test - original-test, same models, same images) gets a paired
interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medmask import columns as C
from medmask.eval._compare import paired_bootstrap
from medmask.eval.classification import per_class_auc
from medmask.masking import contour_overlay

ORIGINAL, OVERLAY = "original", "overlay"
INPUTS = (ORIGINAL, OVERLAY)
ZERO_SHOT, LINEAR_PROBE, JOINT_FINETUNE = "zero_shot", "lp", "jft"
METHODS = (ZERO_SHOT, LINEAR_PROBE, JOINT_FINETUNE)
METHOD_TITLES = {ZERO_SHOT: "Baseline (Zero-shot)", LINEAR_PROBE: "Linear Probing (Frozen Encoder)",
                 JOINT_FINETUNE: "Joint Fine-tuning (Encoder + Head)"}
# Table 2's rows (method, training input; zero-shot is not trained: None) and its 10 cells.
ROWS: tuple[tuple[str, str | None], ...] = (
    (ZERO_SHOT, None), (LINEAR_PROBE, ORIGINAL), (LINEAR_PROBE, OVERLAY),
    (JOINT_FINETUNE, ORIGINAL), (JOINT_FINETUNE, OVERLAY))
CELLS: tuple[tuple[str, str | None, str], ...] = tuple(
    (method, train, test) for method, train in ROWS for test in INPUTS)
READINGS = ("binary", "exact", "top1")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STATISTICS = ("imagenet", "model")
REFERENCE_SIDE = 224  # the side at which ``thickness`` is given (BiomedCLIP's input)
Classifier = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OverlaySettings:
    """The ``clip_overlay`` protocol's parameters (``configs/eval/clip_overlay.yaml``).

    Attributes:
        findings: the finding names, in the order of the ``labels`` columns.
        alpha: equation (1)'s overlay intensity (not stated in the paper; ours 1.0).
        thickness: contour width in pixels at 224 px (not stated; ours 2), scaled to the
            model's input side (at least 1 px).
        statistics: ``"imagenet"`` (Sec. 4.1) or ``"model"`` (the CLIP folder's own).
        positive_prompt, negative_prompt: the zero-shot pair, ``{finding}`` filled in (the
            finding's name in lower case).
        threshold: probability threshold of a positive prediction.
        reading: the reading the grid and heatmap show (``binary``, ``exact`` or ``top1``).
        bootstrap: resamples of the test images for each interval.
        confidence: the intervals' coverage.
        bootstrap_seed: seed of the resampling.
    """

    findings: tuple[str, ...] = C.PHANTOM_FINDINGS
    alpha: float = 1.0
    thickness: int = 2
    statistics: str = "imagenet"
    positive_prompt: str = "a chest x-ray showing {finding}"
    negative_prompt: str = "a chest x-ray showing no {finding}"
    threshold: float = 0.5
    reading: str = "binary"
    bootstrap: int = 2000
    confidence: float = 0.95
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        if not self.findings:
            raise ValueError("clip_overlay needs at least one finding")
        if float(self.alpha) < 0 or int(self.thickness) < 1:
            raise ValueError(f"need alpha >= 0 and thickness >= 1, got {self.alpha!r}, "
                             f"{self.thickness!r}")
        if self.statistics not in STATISTICS:
            raise ValueError(f"statistics must be one of {STATISTICS}, got {self.statistics!r}")
        for name in ("positive_prompt", "negative_prompt"):
            if "{finding}" not in getattr(self, name):
                raise ValueError(f"{name} must contain '{{finding}}', got "
                                 f"{getattr(self, name)!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.reading not in READINGS:
            raise ValueError(f"reading must be one of {READINGS}, got {self.reading!r}")
        if int(self.bootstrap) < 1 or not 0.0 < float(self.confidence) < 1.0:
            raise ValueError(f"need bootstrap >= 1 and confidence in (0, 1), got "
                             f"{self.bootstrap!r}, {self.confidence!r}")

    @classmethod
    def from_params(cls, **params: Any) -> OverlaySettings:
        """Settings from plain parameters (a Hydra mapping); unknown keys are named."""
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ValueError(f"unknown clip_overlay parameter(s) {unknown}; valid: "
                             f"{sorted(valid)}")
        if "findings" in params:
            params["findings"] = tuple(params["findings"])
        return cls(**params)

    def thickness_at(self, side: int) -> int:
        """The contour width in pixels at an input side of ``side`` px."""
        return max(1, round(int(self.thickness) * int(side) / REFERENCE_SIDE))

    def prompts(self) -> list[str]:
        """The 2K zero-shot prompts: finding k's positive at 2k, its negative at 2k + 1."""
        return [template.format(finding=name.lower()) for name in self.findings
                for template in (self.positive_prompt, self.negative_prompt)]


def standardized_clip(clip: Any, settings: OverlaySettings) -> Any:
    """``clip`` standardizing with the settings' statistics (ImageNet's, or its own)."""
    if settings.statistics == "model":
        return clip
    return clip.with_statistics(IMAGENET_MEAN, IMAGENET_STD)


def clip_inputs(images: torch.Tensor, organs: torch.Tensor, side: int, condition: str,
                settings: OverlaySettings) -> torch.Tensor:
    """The RGB model input [B, 3, side, side] in [0, 1]: images resized (bicubic, clipped)
    to ``side``, with the contour overlay (equation 1; organ maps resized by nearest
    neighbour) when ``condition`` is ``"overlay"``.

    Args:
        images: [B, H, W] or [B, 1, H, W] grey images in [0, 1].
        organs: [B, H, W] organ label maps (0 background, 1/2 lungs, 3 heart).
    """
    if condition not in INPUTS:
        raise ValueError(f"condition must be one of {INPUTS}, got {condition!r}")
    x = images.float()[:, None] if images.ndim == 3 else images.float()
    if tuple(x.shape[-2:]) != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False)
        x = x.clamp(0.0, 1.0)
    if condition == ORIGINAL:
        return x.expand(-1, 3, -1, -1).contiguous()
    maps = organs
    if tuple(maps.shape[-2:]) != (side, side):
        maps = F.interpolate(maps[:, None].float(), size=(side, side), mode="nearest")[:, 0]
    overlay, _ = contour_overlay(x, maps.to(torch.uint8), settings.alpha,
                                 settings.thickness_at(side))
    return overlay


@torch.no_grad()
def zero_shot_probabilities(clip: Any, inputs: torch.Tensor,
                            settings: OverlaySettings) -> torch.Tensor:
    """p [B, K]: per finding, the softmax over its (positive, negative) prompt pair of CLIP's
    scaled cosine similarities, the positive's share (module docstring)."""
    text = clip.encode_text(settings.prompts(), normalize=True)  # [2K, D]
    image = clip.encode(inputs, normalize=True)  # [B, D]
    scale = clip.model.logit_scale.exp() if hasattr(clip.model, "logit_scale") else 100.0
    logits = (scale * image @ text.T).reshape(len(inputs), len(settings.findings), 2)
    return torch.softmax(logits.double(), dim=2)[..., 0].cpu()


def readings(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5
             ) -> dict[str, np.ndarray]:
    """Per image, the three readings of the accuracy (module docstring): float64 [N] each."""
    p, y = np.asarray(probs, np.float64), np.asarray(targets) > 0.5
    right = (p >= threshold) == y
    top = y[np.arange(len(y)), p.argmax(1)]
    return {"binary": right.mean(1), "exact": right.all(1).astype(np.float64),
            "top1": top.astype(np.float64)}


def baseline_readings(targets: np.ndarray) -> dict[str, dict[str, float]]:
    """The all-negative and prevalence predictors' readings on these test labels."""
    y = np.asarray(targets) > 0.5
    prevalence = y.mean(0)
    negative = readings(np.zeros(y.shape), y)
    negative["top1"] = np.zeros(len(y))  # it names no finding
    constant = readings(np.broadcast_to(np.where(prevalence > 0.5, 1.0, 0.0), y.shape), y)
    constant["top1"] = y[:, int(prevalence.argmax())].astype(np.float64)
    return {"all_negative": {k: float(v.mean()) for k, v in negative.items()},
            "prevalence": {k: float(v.mean()) for k, v in constant.items()}}


@dataclass(frozen=True)
class OverlayResult:
    """What :func:`evaluate_clip_overlay` measured.

    Attributes:
        cells: one row per (method, train, test, seed): the three readings, per-finding
            accuracy and AUC.
        grid: one row per cell of :data:`CELLS` present: each reading's mean over seeds,
            interval, seed spread, seeds, images.
        gains: per trained row (and zero-shot), the overlay-test minus original-test
            difference of each reading with its paired interval.
        baselines: the all-negative and prevalence readings on the test images.
        images: test images scored.
    """

    cells: pd.DataFrame
    grid: pd.DataFrame
    gains: pd.DataFrame
    baselines: pd.DataFrame
    images: int
    settings: OverlaySettings = field(default_factory=OverlaySettings)

    def layout(self, reading: str | None = None) -> pd.DataFrame:
        """Table 2's layout: rows (method, training data), columns original / overlay test,
        each ``mean [low, high]`` of ``reading`` (default: the settings' reading)."""
        return grid_layout(self.grid, reading or self.settings.reading)


def grid_layout(grid: pd.DataFrame, reading: str = "binary") -> pd.DataFrame:
    """Table 2's layout of a :attr:`OverlayResult.grid` (missing cells are empty)."""
    rows = []
    for method, train in ROWS:
        row: dict[str, Any] = {"method": METHOD_TITLES[method], "training data": train or "-"}
        for test in INPUTS:
            match = grid[(grid["method"] == method) & (grid["test"] == test)
                         & (grid["train"].fillna("-") == (train or "-"))]
            row[f"test {test}"] = ("" if match.empty else
                                   "{:.3f} [{:.3f}, {:.3f}]".format(
                                       *match.iloc[0][[f"{reading}_mean", f"{reading}_low",
                                                       f"{reading}_high"]]))
        rows.append(row)
    return pd.DataFrame(rows)


def _predict(model: Classifier, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        logits = model(inputs)
    if logits.ndim != 2 or logits.shape[0] != len(inputs):
        raise ValueError(f"a clip_overlay classifier must return logits [B, findings], got "
                         f"{tuple(logits.shape)} for {len(inputs)} images")
    return torch.sigmoid(logits.double()).cpu().numpy()


def _test_batches(batches: Iterable[Mapping[str, Any]]) -> tuple[torch.Tensor, ...]:
    images, organs, labels = [], [], []
    for batch in batches:
        missing = [k for k in (C.IMAGE, C.ORGANS, C.LABELS) if batch.get(k) is None]
        if missing:
            raise ValueError(f"the clip_overlay protocol needs columns {missing}; the batch "
                             f"has {sorted(batch)}")
        images.append(torch.as_tensor(np.asarray(batch[C.IMAGE])))
        organs.append(torch.as_tensor(np.asarray(batch[C.ORGANS])))
        labels.append(torch.as_tensor(np.asarray(batch[C.LABELS], np.float32)))
    if not images:
        raise ValueError("the clip_overlay protocol got no images")
    return torch.cat(images), torch.cat(organs), torch.cat(labels)


def evaluate_clip_overlay(
    clip: Any,
    batches: Iterable[Mapping[str, Any]],
    classifiers: Mapping[tuple[str, str], Sequence[Classifier]] | None = None,
    settings: OverlaySettings | None = None,
    batch_size: int = 64,
) -> OverlayResult:
    """Score Table 2's cells on the test ``batches`` (module docstring).

    Args:
        clip: a :class:`medmask.models.CLIPEncoder` (zero-shot cells, standardized as the
            settings say; its ``image_size`` is the input side of every cell).
        batches: mappings with ``image`` [B, H, W], ``organs`` [B, H, W] and ``labels``
            [B, K] (multi-hot; rows with no positive are dropped, as the paper keeps only
            samples with at least one positive).
        classifiers: ``{(method, train): [model per seed]}`` for method ``lp`` / ``jft`` and
            train ``original`` / ``overlay``; a model maps RGB inputs [B, 3, S, S] in [0, 1]
            (:func:`clip_inputs`) to logits [B, K]. None: the zero-shot cells only.
        settings: :class:`OverlaySettings`.

    Raises:
        ValueError: a missing column, no image with a positive, an unknown cell, labels that
            do not have one column per finding.
    """
    settings = settings or OverlaySettings()
    images, organs, labels = _test_batches(batches)
    if labels.ndim != 2 or labels.shape[1] != len(settings.findings):
        raise ValueError(f"labels have shape {tuple(labels.shape)}; the settings name "
                         f"{len(settings.findings)} findings {list(settings.findings)}")
    keep = labels.amax(1) > 0.5
    if not bool(keep.any()):
        raise ValueError("no test image has a positive finding (the paper keeps only those)")
    images, organs, targets = images[keep], organs[keep], labels[keep].numpy()
    for method, train in classifiers or {}:
        if (method, train) not in ROWS or method == ZERO_SHOT:
            raise ValueError(f"unknown trained cell ({method!r}, {train!r}); valid: "
                             f"{[r for r in ROWS if r[0] != ZERO_SHOT]}")
    side = int(clip.image_size)
    clip = standardized_clip(clip, settings)
    scorers: dict[tuple[str, str | None], Sequence[Callable[[torch.Tensor], np.ndarray]]] = {
        (ZERO_SHOT, None): [lambda x: zero_shot_probabilities(clip, x, settings).numpy()]}
    for key, models in (classifiers or {}).items():
        scorers[key] = [lambda x, m=m: _predict(m, x) for m in models]
    chunks: dict[tuple[str, str | None, str, int], list[np.ndarray]] = {}
    for test in INPUTS:
        for lo in range(0, len(images), batch_size):
            inputs = clip_inputs(images[lo:lo + batch_size], organs[lo:lo + batch_size], side,
                                 test, settings)
            for (method, train), fns in scorers.items():
                for seed, fn in enumerate(fns):
                    chunks.setdefault((method, train, test, seed), []).append(fn(inputs))
    probs = {k: np.concatenate(v) for k, v in chunks.items()}
    return summarize_clip_overlay(probs, targets, settings)


def summarize_clip_overlay(probs: Mapping[tuple[str, str | None, str, int], np.ndarray],
                           targets: np.ndarray, settings: OverlaySettings) -> OverlayResult:
    """The cell, grid, gain and baseline tables from per-image probabilities
    ``{(method, train, test, seed): [N, K]}`` on the same test ``targets`` [N, K]."""
    per_image = {k: readings(p, targets, settings.threshold) for k, p in probs.items()}
    cells = []
    for (method, train, test, seed), p in probs.items():
        right = (p >= settings.threshold) == (targets > 0.5)
        auc = per_class_auc(p, targets, multilabel=True)
        cells.append({"method": method, "train": train, "test": test, "seed": seed,
                      **{r: float(v.mean()) for r, v in per_image[method, train, test,
                                                                   seed].items()},
                      **{f"acc/{n}": float(a) for n, a in zip(settings.findings,
                                                              right.mean(0), strict=True)},
                      **{f"auc/{n}": float(a) for n, a in zip(settings.findings, auc,
                                                              strict=True)}})
    cells_table = pd.DataFrame(cells)

    def seeds_of(method: str, train: str | None, test: str) -> list[dict[str, np.ndarray]]:
        return [v for (m, t, s, _), v in sorted(per_image.items(), key=lambda kv: kv[0][3])
                if (m, t, s) == (method, train, test)]

    boot = {"resamples": int(settings.bootstrap), "seed": int(settings.bootstrap_seed),
            "level": float(settings.confidence)}
    grid, gains = [], []
    for method, train, test in CELLS:
        runs = seeds_of(method, train, test)
        if not runs:
            continue
        row: dict[str, Any] = {"method": method, "train": train, "test": test,
                               "seeds": len(runs), "images": len(targets)}
        for reading in READINGS:
            values = [run[reading] for run in runs]
            interval = paired_bootstrap(values, [np.zeros_like(v) for v in values], **boot)
            row |= {f"{reading}_mean": interval.difference, f"{reading}_low": interval.low,
                    f"{reading}_high": interval.high,
                    f"{reading}_seed_sd": float(np.std(interval.per_seed, ddof=1))
                    if len(runs) > 1 else 0.0}
        grid.append(row)
    for method, train in ROWS:
        overlay, original = seeds_of(method, train, OVERLAY), seeds_of(method, train, ORIGINAL)
        if not overlay or len(overlay) != len(original):
            continue
        row = {"method": method, "train": train, "seeds": len(overlay)}
        for reading in READINGS:
            gain = paired_bootstrap([r[reading] for r in overlay],
                                    [r[reading] for r in original], **boot)
            row |= {f"{reading}_gain": gain.difference, f"{reading}_low": gain.low,
                    f"{reading}_high": gain.high}
        gains.append(row)
    base = baseline_readings(targets)
    baselines = pd.DataFrame([{"baseline": name, **values} for name, values in base.items()])
    return OverlayResult(cells_table, pd.DataFrame(grid), pd.DataFrame(gains), baselines,
                         len(targets), settings)

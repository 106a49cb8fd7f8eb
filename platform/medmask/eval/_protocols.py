"""The registry of evaluation protocols: name -> a function of batches and parameters -> table.

A protocol takes the evaluation batches (mappings of tensors: ``image`` and the columns it
declares in ``needs``) and its parameters, and returns a pandas table, one row per condition;
``experiments/evaluate.py eval=<name>`` runs it on any dataset and logs the table to MLflow.
A new protocol is one module (a ``@register_protocol`` function) and one ``configs/eval``
file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from medmask import columns as C
from medmask.eval._clip_overlay import OverlaySettings, evaluate_clip_overlay
from medmask.eval._grounding import GroundingSettings, evaluate_grounding
from medmask.masking import create_pixel_masker, pixel_masker_needs
from medmask.registry import Registry

Protocol = Callable[..., pd.DataFrame]
PROTOCOLS: Registry[Protocol] = Registry("evaluation protocol")


def register_protocol(name: str, *, needs: tuple[str, ...] = ()) -> Callable[[Protocol],
                                                                            Protocol]:
    """Register ``f(batches, **params) -> DataFrame`` under ``name`` (``needs``: columns)."""
    return PROTOCOLS.register(name, needs=needs)


def list_protocols(filter: str = "") -> list[str]:  # noqa: A002 (timm's name)
    """Sorted names of the registered evaluation protocols."""
    return PROTOCOLS.names(filter)


def protocol_needs(name: str) -> tuple[str, ...]:
    """The batch columns protocol ``name`` reads besides ``image``."""
    return PROTOCOLS.entry(name).needs


def run_protocol(name: str, batches: Iterable[Mapping[str, Any]], **params: Any
                 ) -> pd.DataFrame:
    """Run protocol ``name`` over ``batches``; an unknown name lists the valid ones."""
    protocol = PROTOCOLS.get(name)
    return protocol(batches, **params)


@register_protocol("masked_area", needs=(C.GAZE, C.ORGANS))
def masked_area(batches: Iterable[Mapping[str, Any]], *,
                ratios: Sequence[float] = (0.1, 0.2, 0.3, 0.4),
                maskers: Sequence[str] = ("anatomical", "non_anatomical"),
                seeds: Sequence[int] = (0, 1, 2), tolerance: float = 0.005,
                masker_params: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """What each inference masking condition really masks (Mask Creation Methodology,
    "Inference: Anatomical-Specific Masking" and "Non-Anatomical Masking").

    For every masker and target area r, the achieved masked fraction per image, over every
    rectangle seed for the randomized maskers: its mean, minimum, and the number of images
    that fall short of r by more than ``tolerance`` (non-anatomical masking can, when the
    anatomy covers most of the image). A drop in accuracy is to be read against the area
    actually masked, not against r.
    """
    extra = masker_params or {}
    rows = []
    batches = list(batches)
    for name in maskers:
        needed = set(pixel_masker_needs(name))
        for ratio in ratios:
            masker = create_pixel_masker(name, ratio=float(ratio), **dict(extra.get(name, {})))
            achieved = []
            for seed in seeds:
                generator = torch.Generator().manual_seed(int(seed))
                for batch in batches:
                    missing = needed - set(batch)
                    if missing:
                        raise ValueError(f"masker {name!r} needs columns {sorted(missing)}; "
                                         f"the batch has {sorted(batch)}")
                    achieved.append(masker(batch, generator=generator).achieved)
            values = torch.cat(achieved).double()
            rows.append({"masker": name, "ratio": float(ratio),
                         "achieved_mean": float(values.mean()),
                         "achieved_min": float(values.min()),
                         "short_images": int((values < float(ratio) - tolerance).sum()),
                         "draws": int(values.numel())})
    return pd.DataFrame(rows)


@register_protocol("grounding", needs=(C.LABEL, C.GAZE, C.ORGANS, C.ANATOMY))
def grounding(batches: Iterable[Mapping[str, Any]], *, model: Any = None,
              **params: Any) -> pd.DataFrame:
    """Visual grounding of ``model`` under anatomical vs non-anatomical masking (Mask Creation
    Methodology, inference; :mod:`medmask.eval._grounding` gives the formulas): the table of
    drops per ratio and condition; its ``attrs`` hold the score, the interval and the
    qualifying ratios (:meth:`GroundingResult.summary`). ``params``: the fields of
    :class:`GroundingSettings` (unknown ones are named). The columns it reads are ``label``,
    ``gaze`` and the anatomy source (``organs`` or ``anatomy``), whichever the settings use.
    """
    settings = GroundingSettings.from_params(**params)
    if model is None:
        raise ValueError("the grounding protocol needs a model (images -> logits): "
                         "experiments/grounding.py trains, reuses or loads one")
    result = evaluate_grounding(model, batches, settings)
    table = result.table.copy()
    table.attrs.update(result.summary())
    return table


@register_protocol("clip_overlay", needs=(C.ORGANS, C.LABELS))
def clip_overlay(batches: Iterable[Mapping[str, Any]], *, model: Any = None,
                 classifiers: Mapping[tuple[str, str], Sequence[Any]] | None = None,
                 **params: Any) -> pd.DataFrame:
    """Anatomical contour overlays on a CLIP's inputs (Anatomical Masking as Lightweight
    Visual Priors, Table 2; :mod:`medmask.eval._clip_overlay` gives the protocol): one row per
    cell of the training x test grid present (zero-shot with ``model``, a
    :class:`~medmask.models.CLIPEncoder`; the LP/JFT cells with ``classifiers``
    ``{(method, train): [model per seed]}``), each reading's mean and interval; ``attrs``
    hold Table 2's layout, the test-time gains and the baselines. ``params``: the fields of
    :class:`OverlaySettings` (unknown ones are named)."""
    settings = OverlaySettings.from_params(**params)
    if model is None:
        raise ValueError("the clip_overlay protocol needs a CLIP (model=load_clip(folder)): "
                         "experiments/clip_overlay.py trains, reuses or loads one")
    result = evaluate_clip_overlay(model, batches, classifiers, settings)
    table = result.grid.copy()
    table.attrs.update({"layout": result.layout().to_dict("records"),
                        "gains": result.gains.to_dict("records"),
                        "baselines": result.baselines.to_dict("records"),
                        "images": result.images})
    return table

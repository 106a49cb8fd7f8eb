"""The anatomical region of an image: what non-anatomical masking must never touch.

Source: Mask Creation Methodology ("Non-Anatomical Masking": overlap with anatomical regions is
strictly prevented). The region is a binary map built from what a dataset has: an organ label
map (phantoms, CheXmask), a gaze/anatomy heatmap thresholded at a configurable share of its
maximum (a blurred heatmap is nonzero almost everywhere, so never ``> 0``), or both (union).
EYEGAZE anatomy bounding boxes are rasterized by the data room
(``medmask.data.eyegaze.anatomy_map``) and can be passed here as ``extra``.
"""

from __future__ import annotations

import numpy as np
import torch

from medmask import columns as C
from medmask.masking._anatomical import combined_heatmap
from medmask.masking._validate import as_tensor

ANATOMY_LABELS: tuple[int, ...] = (*C.LUNG_LABELS, C.ORGAN_HEART)


def anatomy_region(
    organs: np.ndarray | torch.Tensor | None = None,
    heatmap: np.ndarray | torch.Tensor | None = None,
    extra: np.ndarray | torch.Tensor | None = None,
    *,
    labels: tuple[int, ...] = ANATOMY_LABELS,
    threshold: float = 0.2,
) -> torch.Tensor:
    """Bool [B, H, W] anatomical region: the union of whichever sources are given.

    Args:
        organs: [B, H, W] organ label map; pixels with a label in ``labels`` (default lungs
            and heart) are anatomy.
        heatmap: [B, K, H, W] or [B, H, W] heatmap(s); a pixel is anatomy when the combined
            heatmap is > 0 and >= ``threshold`` x that image's maximum.
        extra: [B, H, W] bool region to add (e.g. rasterized EYEGAZE anatomy boxes).
        labels: organ labels that count as anatomy.
        threshold: share of each heatmap's maximum, in (0, 1].

    Raises:
        ValueError: no source given, a threshold outside (0, 1], sources of different shapes,
            a NaN heatmap (naming the image).
    """
    if organs is None and heatmap is None and extra is None:
        raise ValueError("anatomy_region needs organs, a heatmap or an extra region")
    parts: list[torch.Tensor] = []
    if organs is not None:
        maps = as_tensor(organs, name="organs")
        parts.append(torch.isin(maps, torch.tensor(list(labels), dtype=maps.dtype)))
    if heatmap is not None:
        if not 0.0 < float(threshold) <= 1.0:
            raise ValueError(f"heatmap threshold must be in (0, 1] of the maximum, got "
                             f"{threshold!r} (a blurred heatmap is > 0 almost everywhere)")
        heat = combined_heatmap(heatmap)
        peak = heat.flatten(1).amax(1)[:, None, None]
        parts.append((heat > 0) & (heat >= float(threshold) * peak))
    if extra is not None:
        parts.append(as_tensor(extra, name="extra").to(torch.bool))
    shapes = {tuple(p.shape) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"anatomy sources have different shapes: {sorted(shapes)}")
    region = parts[0].cpu()
    for part in parts[1:]:
        region = region | part.cpu()
    return region

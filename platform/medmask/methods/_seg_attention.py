"""Option 5 of the Segmentation-Guided SSL guide (``seg_attention``) and its control
(``simclr_recon``).

Option 5's multi-task loss (guide, "Multi-Task Loss Function"), over the two views of a batch:

    L = alpha x NT-Xent(p1, p2) + beta x MSE(decoder(f1), view1) + gamma x C(m1, m2),
    alpha = 1.0, beta = 0.5, gamma = 0.2,

with p the score-conditioned projections, f1 view 1's features, m the predicted masks
(:class:`~medmask.models.SegAttentionCNN`) and C the segmentation consistency, in one of two
modes (``params.consistency``):

- ``warped`` (default): view 2's mask resampled into view 1's frame by the two views' known
  rotation and flip (:func:`medmask.segmentation.warp_between_views`), the MSE over the
  overlap ``O`` of the two views: ``C = sum_O (m1 - W m2)^2 / |O|``. Masks of differently
  rotated or mirrored views do not describe the same pixels as they are; the masks live at
  stage 3's grid (H/8), whose cells the warp treats as pixel centres (a sub-cell offset of the
  stride-2 convolutions is ignored);
- ``literal``: the guide's ``MSE(seg_mask_1, seg_mask_2)`` of the unwarped masks.

Nothing in that loss stops a constant mask. The method logs, each epoch, the predicted mask's
Dice against the phantom lungs (view 1's organ map moved with the view; mask upsampled to the
image, thresholded at 0.5) and its spatial standard deviation (``train/seg_mask_dice``,
``train/seg_mask_std``), and warns when the mask collapses (std < 0.05 or Dice < 0.3). A
labelled deviation, off by default (``params.lung_bce_weight``): ``+ w x BCE(m, Otsu lungs)``
of both views, the rule-based lungs (:func:`medmask.segmentation.lung_mask`, never the ground
truth) area-averaged to the mask grid.

``simclr_recon``: the baseline plus option 5's reconstruction term, ``NT-Xent(p1, p2) + 0.5 x
MSE(decoder(f1), view1)`` on the plain backbone with a decoder (``model.params.img_size``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from medmask import columns as C
from medmask.methods._contrastive import (
    DEFAULT_MODEL,
    TEMPERATURE,
    nt_xent,
    two_views,
)
from medmask.methods._registry import LoopParts, Method, register_method
from medmask.models import SegAttentionCNN, autocast, create_model
from medmask.segmentation import AugmentParams, lung_mask, warp_between_views

log = logging.getLogger(__name__)

CONSISTENCY_MODES = ("warped", "literal")
COLLAPSE_STD, COLLAPSE_DICE = 0.05, 0.3
SEG_MODEL = "seg_attention_cnn_tiny"


@dataclass(frozen=True)
class SegAttentionParams:
    """Option 5's loss settings (``configs/method/seg_attention.yaml``'s ``params``).

    Attributes:
        temperature: NT-Xent's tau.
        contrastive_weight, reconstruction_weight, consistency_weight: the guide's alpha = 1.0,
            beta = 0.5, gamma = 0.2.
        consistency: ``warped`` (view 2's mask in view 1's frame, MSE over the overlap) or
            ``literal`` (the guide's MSE of the unwarped masks).
        lung_bce_weight: the labelled deviation: weight of a BCE of both masks against the
            rule-based Otsu lungs (0 = the guide's loss).
    """

    temperature: float = TEMPERATURE
    contrastive_weight: float = 1.0
    reconstruction_weight: float = 0.5
    consistency_weight: float = 0.2
    consistency: str = "warped"
    lung_bce_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.consistency not in CONSISTENCY_MODES:
            raise ValueError(f"seg_attention params.consistency must be one of "
                             f"{CONSISTENCY_MODES}, got {self.consistency!r}")
        if self.temperature <= 0 or min(self.contrastive_weight, self.reconstruction_weight,
                                        self.consistency_weight, self.lung_bce_weight) < 0:
            raise ValueError(f"seg_attention needs temperature > 0 and weights >= 0, got {self}")

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> SegAttentionParams:
        """From a method's ``params``; an unknown key lists the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"seg_attention params {unknown} unknown; valid: {sorted(valid)}")
        return cls(**{k: (str(v) if k == "consistency" else float(v))
                      for k, v in params.items()})


class SegAttentionTerms(NamedTuple):
    """The loss and its weighted parts' unweighted values (scalars)."""

    total: torch.Tensor
    contrastive: torch.Tensor
    reconstruction: torch.Tensor
    consistency: torch.Tensor
    lung_bce: torch.Tensor


# ------------------------------------------------------------------------------------------
# losses


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The guide's reconstruction loss: the pixel MSE ``mean (decoder(f) - x)^2``."""
    if reconstruction.shape != images.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and images "
                         f"{tuple(images.shape)} must have one shape")
    return F.mse_loss(reconstruction.float(), images.float())


def consistency_loss(mask1: torch.Tensor, mask2: torch.Tensor, params1: AugmentParams,
                     params2: AugmentParams, mode: str = "warped") -> torch.Tensor:
    """Segmentation consistency of two views' masks [B, 1, h, w] (module docstring):
    ``warped``: ``sum_O (m1 - W m2)^2 / |O|``; ``literal``: ``mean (m1 - m2)^2``."""
    if mask1.shape != mask2.shape or mask1.ndim != 4:
        raise ValueError(f"consistency takes two masks [B, 1, h, w] of one shape, got "
                         f"{tuple(mask1.shape)} and {tuple(mask2.shape)}")
    m1, m2 = mask1.float(), mask2.float()
    if mode == "literal":
        return F.mse_loss(m1, m2)
    if mode != "warped":
        raise ValueError(f"consistency mode must be one of {CONSISTENCY_MODES}, got {mode!r}")
    warped, overlap = warp_between_views(m2, params2, params1)
    weights = overlap.to(m1.dtype)
    return ((m1 - warped) ** 2 * weights).sum() / weights.sum().clamp_min(1.0)


def lung_bce(mask: torch.Tensor, lungs: torch.Tensor) -> torch.Tensor:
    """``BCE(m, t)`` with t the lung masks [B, H, W] area-averaged to the mask grid."""
    target = F.interpolate(lungs[:, None].float(), size=mask.shape[-2:], mode="area")
    return F.binary_cross_entropy(mask.float().clamp(1e-6, 1 - 1e-6), target.to(mask.device))


def seg_attention_loss(p1: torch.Tensor, p2: torch.Tensor, reconstruction: torch.Tensor,
                       view1: torch.Tensor, mask1: torch.Tensor, mask2: torch.Tensor,
                       params1: AugmentParams, params2: AugmentParams,
                       settings: SegAttentionParams,
                       lungs: tuple[torch.Tensor, torch.Tensor] | None = None
                       ) -> SegAttentionTerms:
    """Option 5's ``alpha NT-Xent + beta MSE_recon + gamma C (+ w BCE to the Otsu lungs of
    both views, ``lungs``, when ``settings.lung_bce_weight`` > 0)``."""
    contrastive = nt_xent(p1.float(), p2.float(), settings.temperature)
    recon = reconstruction_loss(reconstruction, view1)
    consistency = consistency_loss(mask1, mask2, params1, params2, settings.consistency)
    bce = torch.zeros((), device=contrastive.device)
    if settings.lung_bce_weight > 0:
        if lungs is None:
            raise ValueError("lung_bce_weight > 0 needs the views' Otsu lungs")
        bce = (lung_bce(mask1, lungs[0]) + lung_bce(mask2, lungs[1])) / 2
    total = (settings.contrastive_weight * contrastive + settings.reconstruction_weight * recon
             + settings.consistency_weight * consistency + settings.lung_bce_weight * bce)
    return SegAttentionTerms(total, contrastive, recon, consistency, bce)


# ------------------------------------------------------------------------------------------
# collapse measures


def mask_dice(mask: torch.Tensor, lungs: torch.Tensor) -> torch.Tensor:
    """Dice [B] of predicted masks [B, 1, h, w] (bilinear to the lungs' size, > 0.5) against
    lung masks [B, H, W]: ``2 |A & B| / (|A| + |B|)`` (0 where both are empty)."""
    predicted = F.interpolate(mask.float(), size=lungs.shape[-2:], mode="bilinear",
                              align_corners=False)[:, 0] > 0.5
    truth = lungs.to(predicted.device).bool()
    overlap = (predicted & truth).flatten(1).sum(1).float()
    sizes = predicted.flatten(1).sum(1) + truth.flatten(1).sum(1)
    return 2 * overlap / sizes.clamp_min(1).float()


def mask_spatial_std(mask: torch.Tensor) -> torch.Tensor:
    """Spatial standard deviation [B] of masks [B, 1, h, w] (0: a constant mask)."""
    return mask.float().flatten(1).std(dim=1)


def is_collapsed(std: float, dice: float) -> bool:
    """The collapse rule: spatial std < 0.05 or Dice against the lungs < 0.3."""
    return std < COLLAPSE_STD or dice < COLLAPSE_DICE


class MaskMonitor:
    """Per-epoch means of the predicted masks' Dice and spatial std and of the loss terms."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.images = 0

    def add(self, terms: SegAttentionTerms, mask: torch.Tensor,
            lungs: torch.Tensor | None) -> None:
        b = mask.shape[0]
        values = {"seg_mask_std": mask_spatial_std(mask.detach()).mean().item(),
                  **{f"loss_{k}": v.item() for k, v in terms._asdict().items() if k != "total"}}
        if lungs is not None:
            values["seg_mask_dice"] = mask_dice(mask.detach(), lungs).mean().item()
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * b
        self.images += b

    def epoch_metrics(self) -> dict[str, float]:
        """``train/<measure>`` means since the last call (then reset); warns on a collapse."""
        if not self.images:
            return {}
        means = {k: v / self.images for k, v in self.sums.items()}
        self.sums, self.images = {}, 0
        metrics = {f"train/{k}": v for k, v in means.items()}
        if "seg_mask_dice" in means:
            collapsed = is_collapsed(means["seg_mask_std"], means["seg_mask_dice"])
            metrics["train/seg_mask_collapsed"] = float(collapsed)
            if collapsed:
                log.warning("seg_attention: the predicted mask collapsed (spatial std %.3f, "
                            "Dice vs the lungs %.3f; collapse: std < %.2f or Dice < %.1f). "
                            "params.lung_bce_weight > 0 adds a weak Otsu-lung target",
                            means["seg_mask_std"], means["seg_mask_dice"], COLLAPSE_STD,
                            COLLAPSE_DICE)
        return metrics


# ------------------------------------------------------------------------------------------
# the loop parts


def _lungs(organs: torch.Tensor | None) -> torch.Tensor | None:
    if organs is None:
        return None
    return (organs == C.ORGAN_RIGHT_LUNG) | (organs == C.ORGAN_LEFT_LUNG)


def otsu_lungs(views: torch.Tensor) -> torch.Tensor:
    """The rule-based (Otsu) lungs bool [B, H, W] of views [B, 1, H, W], on the CPU."""
    lungs = lung_mask(views[:, 0].detach().float().cpu().numpy())
    return torch.from_numpy(lungs).to(views.device)


def seg_attention_parts(config: Mapping[str, Any], device: torch.device,
                        strategy: Any) -> LoopParts:
    """Option 5: the multi-task loss on :class:`~medmask.models.SegAttentionCNN`, with the
    per-epoch mask measures."""
    settings = SegAttentionParams.from_mapping(dict(config.get("method_params") or {}))
    model = create_model(config["model"]["name"], **config["model"].get("params", {}))
    if not isinstance(model, SegAttentionCNN):
        raise ValueError(f"seg_attention trains option 5's encoder: model=seg_attention_tiny "
                         f"(or seg_attention), got model {config['model']['name']!r}")
    seed, mixed = int(config["seed"]), bool(config.get("mixed_precision", True))
    monitor = MaskMonitor()

    def batch_loss(net: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                   epoch: int) -> tuple[torch.Tensor, int]:
        views = two_views(batch, seed=seed, epoch=epoch)
        b = views.view1.shape[0]
        with autocast(device, mixed):
            out = net(torch.cat([views.view1, views.view2]).to(device), reconstruct=b)
        otsu = None
        if settings.lung_bce_weight > 0:
            otsu = (otsu_lungs(views.view1), otsu_lungs(views.view2))
        terms = seg_attention_loss(out.projection[:b], out.projection[b:], out.reconstruction,
                                   views.view1.to(device), out.mask[:b], out.mask[b:],
                                   views.params1, views.params2, settings, otsu)
        monitor.add(terms, out.mask[:b], _lungs(views.organs1))
        return terms.total, b

    return LoopParts(model, batch_loss, epoch_metrics=monitor.epoch_metrics)


def simclr_recon_parts(config: Mapping[str, Any], device: torch.device,
                       strategy: Any) -> LoopParts:
    """The control: ``NT-Xent + reconstruction_weight x MSE(decoder(f1), view1)``."""
    params = dict(config.get("method_params") or {})
    unknown = sorted(set(params) - {"temperature", "reconstruction_weight"})
    if unknown:
        raise ValueError(f"simclr_recon params {unknown} unknown; valid: "
                         "['reconstruction_weight', 'temperature']")
    temperature = float(params.get("temperature", TEMPERATURE))
    weight = float(params.get("reconstruction_weight", 0.5))
    model = create_model(config["model"]["name"], **config["model"].get("params", {}))
    if getattr(model, "decoder", None) is None:
        raise ValueError("simclr_recon reconstructs view 1: give the backbone a decoder, "
                         "+model.params.img_size=<data.size>")
    seed, mixed = int(config["seed"]), bool(config.get("mixed_precision", True))

    def batch_loss(net: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                   epoch: int) -> tuple[torch.Tensor, int]:
        views = two_views(batch, seed=seed, epoch=epoch)
        b = views.view1.shape[0]
        with autocast(device, mixed):
            z, reconstruction = net(torch.cat([views.view1, views.view2]).to(device),
                                    reconstruct=b)
        loss = nt_xent(z[:b].float(), z[b:].float(), temperature) + weight * reconstruction_loss(
            reconstruction, views.view1.to(device))
        return loss, b

    return LoopParts(model, batch_loss)


@register_method("seg_attention")
def seg_attention() -> Method:
    """Option 5: attention + segmentation branch + decoder, 1.0 NT-Xent + 0.5 MSE + 0.2
    segmentation consistency (warped by default)."""
    return Method("seg_attention", seg_attention_parts, columns=(C.IMAGE, C.IMAGE_KEY, C.ORGANS),
                  default_model=SEG_MODEL)


@register_method("simclr_recon")
def simclr_recon() -> Method:
    """The reconstruction control: SimCLR + 0.5 x MSE(decoder(f1), view1)."""
    return Method("simclr_recon", simclr_recon_parts, columns=(C.IMAGE, C.IMAGE_KEY),
                  default_model=DEFAULT_MODEL)

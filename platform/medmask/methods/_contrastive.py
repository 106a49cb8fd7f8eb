"""Contrastive learning: SimCLR and the segmentation-guided options of the SSL guide.

One loss family, NT-Xent (SimCLR, Chen et al. 2020, eq. 1), over the 2B views of a batch: the
two augmented views of image i are each other's positive, the other 2B - 2 views the
negatives, cosine similarities divided by the temperature tau (0.1). Per pair i,

    l_i = (l(i -> i') + l(i' -> i)) / 2,   l(k -> k+) = -log softmax_{j != k}(s_kj / tau)[k+],

so the mean of l_i is SimCLR's loss (the mean over all 2B anchors). The segmentation-guided
options weight each pair by what its views show (our per-sample reading of the guide's
``base_loss x (1 + w x avg_quality)``, which per batch would only rescale the loss):

    L = mean_i [ l_i x (1 + w x (c1_i + c2_i) / 2) ]

with c the lung pixel share of each view's organ map after augmentation (option 1,
``masked_contrastive``, w = 0.3) or the pathology pixel share of the adaptive-threshold AND
Sobel segmentation of each view inside its lungs (option 3, ``pathology_aware``, w = 0.3).
Option 2 (``multi_region``): the six regions (upper/middle/lower thirds, left/right halves,
central third) are carried through each view's augmentation (nearest, so after a flip the
region mask covers the same anatomy on the other side); the region's attention-pooled
embeddings in the two views of an image are a positive pair, the same region of the other
images the negatives:

    L = alpha x NT-Xent(z1, z2) + beta x sum_r NT-Xent(z1_r, z2_r),   alpha = beta = 1.

Option 4 (``seg_crop``) is SimCLR on images cropped to the lungs (the stages crop every split,
pretraining and fine-tuning alike: ``crop`` settings), then augmented.

Views: the guide's one augmentation set (:func:`medmask.segmentation.context_augment`: +-10 deg,
flip 0.5, +-20 % brightness and contrast, noise sigma 0.02 at p 0.6), image and organ map
resampled together. Each image's parameters are keyed noise of (run seed, epoch, image key), so
an image gets the same two views on any worker and in any batch, and new ones every epoch; the
noise pixels come from a generator seeded by the batch's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from medmask import columns as C
from medmask.methods._registry import LoopParts, Method, register_method
from medmask.models import autocast, create_model, images_nchw
from medmask.segmentation import (
    AugmentConfig,
    AugmentParams,
    batch_generator,
    context_augment,
    keyed_augment_params,
    region_masks,
    segment_pathology,
)

DEFAULT_MODEL = "contrastive_cnn_tiny"
TEMPERATURE = 0.1
LUNG_WEIGHT = 0.3
PATHOLOGY_WEIGHT = 0.3
GUIDE_AUGMENTATION = AugmentConfig()  # the guide's option-4 set, for every contrastive method


# ------------------------------------------------------------------------------------------
# losses


def nt_xent_pair_terms(z1: torch.Tensor, z2: torch.Tensor,
                       temperature: float = TEMPERATURE) -> torch.Tensor:
    """Per-pair NT-Xent ``l_i = (l(i -> i') + l(i' -> i)) / 2`` [B] of projections [B, P].

    Their mean is SimCLR's NT-Xent over the 2B views.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent takes two [B, P] projections of one shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"the NT-Xent temperature must be > 0, got {temperature!r}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    self_pair = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    log_prob = torch.log_softmax(logits.masked_fill(self_pair, float("-inf")), dim=1)
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    anchor = -log_prob.gather(1, positive[:, None])[:, 0]  # [2B]: l(k -> k+)
    return (anchor[:b] + anchor[b:]) / 2


def nt_xent(z1: torch.Tensor, z2: torch.Tensor,
            temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's NT-Xent: the mean over the 2B anchors (= the mean of the pair terms)."""
    return nt_xent_pair_terms(z1, z2, temperature).mean()


def weighted_nt_xent(z1: torch.Tensor, z2: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor,
                     weight: float, temperature: float = TEMPERATURE) -> torch.Tensor:
    """``mean_i [ l_i x (1 + weight x (c1_i + c2_i) / 2) ]`` with per-view scores c [B]."""
    if c1.shape != (z1.shape[0],) or c2.shape != c1.shape:
        raise ValueError(f"the view scores must be [B] = [{z1.shape[0]}], got "
                         f"{tuple(c1.shape)} and {tuple(c2.shape)}")
    terms = nt_xent_pair_terms(z1, z2, temperature)
    scale = 1 + weight * (c1.to(terms) + c2.to(terms)) / 2
    return (terms * scale).mean()


def multi_region_nt_xent(z1: torch.Tensor, z2: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor,
                         alpha: float = 1.0, beta: float = 1.0,
                         temperature: float = TEMPERATURE) -> torch.Tensor:
    """``alpha x NT-Xent(z1, z2) + beta x sum_r NT-Xent(r1[:, r], r2[:, r])``; regional
    projections [B, R, P] (each region's negatives: that region in the other images)."""
    if r1.shape != r2.shape or r1.ndim != 3 or r1.shape[0] != z1.shape[0]:
        raise ValueError(f"regional projections must be [B, R, P] of one shape, got "
                         f"{tuple(r1.shape)} and {tuple(r2.shape)}")
    regional = sum(nt_xent(r1[:, r], r2[:, r], temperature) for r in range(r1.shape[1]))
    return alpha * nt_xent(z1, z2, temperature) + beta * regional


# ------------------------------------------------------------------------------------------
# views


class TwoViews(NamedTuple):
    """Two augmented views of a batch with their organ maps (same transform per view)."""

    view1: torch.Tensor  # float [B, 1, H, W]
    view2: torch.Tensor
    organs1: torch.Tensor | None  # organ label maps [B, H, W], lungs swapped where flipped
    organs2: torch.Tensor | None
    params1: AugmentParams
    params2: AugmentParams
    regions1: torch.Tensor | None = None  # bool [B, 6, H, W] region masks moved with view 1
    regions2: torch.Tensor | None = None


def two_views(batch: Mapping[str, torch.Tensor], *, seed: int, epoch: int,
              config: AugmentConfig = GUIDE_AUGMENTATION, regions: bool = False) -> TwoViews:
    """Two keyed augmentations of the batch's images, their organ maps (and, with
    ``regions``, the six region masks) moved with them."""
    images = images_nchw(batch)
    keys = batch[C.IMAGE_KEY].detach().cpu().numpy()
    organs = batch.get(C.ORGANS)
    b, _, h, w = images.shape
    masks: tuple[torch.Tensor, ...] = ()
    if regions:
        fixed = torch.from_numpy(region_masks(h, w)).to(images.device, torch.uint8)
        masks = tuple(m.expand(b, h, w) for m in fixed)
    generator = batch_generator(keys, seed, epoch)
    first, second = (context_augment(images, organs, masks, config=config, generator=generator,
                                     params=params)
                     for params in keyed_augment_params(keys, seed, epoch, 2, config))
    stacked = [torch.stack(out.masks, dim=1).bool() if regions else None
               for out in (first, second)]
    return TwoViews(first.images, second.images, first.organs, second.organs, first.params,
                    second.params, *stacked)


def lung_share(organs: torch.Tensor) -> torch.Tensor:
    """The lung pixel share [B] of organ label maps [B, H, W] (right + left lung codes)."""
    lungs = (organs == C.ORGAN_RIGHT_LUNG) | (organs == C.ORGAN_LEFT_LUNG)
    return lungs.flatten(1).float().mean(1)


def pathology_share(images: torch.Tensor, organs: torch.Tensor | None) -> torch.Tensor:
    """The pathology pixel share [B] of views [B, 1, H, W]: the guide's adaptive threshold AND
    Sobel segmentation (:func:`medmask.segmentation.segment_pathology`) inside the lungs of
    ``organs`` (the whole image where None), on the CPU."""
    lungs = None
    if organs is not None:
        lungs = ((organs == C.ORGAN_RIGHT_LUNG) | (organs == C.ORGAN_LEFT_LUNG)).cpu().numpy()
    pathology = segment_pathology(images[:, 0].detach().float().cpu().numpy(), lungs)
    return torch.from_numpy(pathology.reshape(len(pathology), -1).mean(1)).to(images.device)


# ------------------------------------------------------------------------------------------
# the loop parts


def _params(config: Mapping[str, Any]) -> dict[str, Any]:
    return dict(config.get("method_params") or {})


def contrastive_parts(config: Mapping[str, Any], device: torch.device, strategy: Any, *,
                      score: str | None, default_weight: float = 0.0) -> LoopParts:
    """SimCLR's parts; ``score`` (``"lungs"`` | ``"pathology"`` | None) weights each pair."""
    params = _params(config)
    unknown = sorted(set(params) - {"temperature", "weight"})
    if unknown:
        raise ValueError(f"contrastive method params {unknown} unknown; valid: "
                         "['temperature', 'weight']")
    temperature = float(params.get("temperature", TEMPERATURE))
    weight = float(params.get("weight", default_weight))
    model = create_model(config["model"]["name"], **config["model"].get("params", {}))
    seed = int(config["seed"])
    mixed = config.get("mixed_precision", True)  # True, False or "bf16" (any device)

    def batch_loss(net: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                   epoch: int) -> tuple[torch.Tensor, int]:
        views = two_views(batch, seed=seed, epoch=epoch)
        b = views.view1.shape[0]
        with autocast(device, mixed):
            z = net(torch.cat([views.view1, views.view2]).to(device)).float()
        z1, z2 = z[:b], z[b:]
        if score is None:
            return nt_xent(z1, z2, temperature), b
        if score == "lungs":
            if views.organs1 is None or views.organs2 is None:
                raise ValueError("masked_contrastive reads the batch's 'organs' column")
            c1, c2 = lung_share(views.organs1), lung_share(views.organs2)
        else:
            c1 = pathology_share(views.view1, views.organs1)
            c2 = pathology_share(views.view2, views.organs2)
        return weighted_nt_xent(z1, z2, c1.to(device), c2.to(device), weight, temperature), b

    return LoopParts(model, batch_loss)


def multi_region_parts(config: Mapping[str, Any], device: torch.device,
                       strategy: Any) -> LoopParts:
    """Option 2: global + regional NT-Xent over the backbone's regional attention pooling."""
    params = _params(config)
    unknown = sorted(set(params) - {"temperature", "alpha", "beta"})
    if unknown:
        raise ValueError(f"multi_region params {unknown} unknown; valid: "
                         "['alpha', 'beta', 'temperature']")
    temperature = float(params.get("temperature", TEMPERATURE))
    alpha, beta = float(params.get("alpha", 1.0)), float(params.get("beta", 1.0))
    model = create_model(config["model"]["name"], **config["model"].get("params", {}))
    if getattr(model, "regions", 0) != 6:
        raise ValueError("multi_region needs the backbone's six regional attention heads: "
                         "model.params.regions=6")
    seed = int(config["seed"])
    mixed = config.get("mixed_precision", True)  # True, False or "bf16" (any device)

    def batch_loss(net: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                   epoch: int) -> tuple[torch.Tensor, int]:
        views = two_views(batch, seed=seed, epoch=epoch, regions=True)
        b = views.view1.shape[0]
        with autocast(device, mixed):
            z, r = net(torch.cat([views.view1, views.view2]).to(device),
                       torch.cat([views.regions1, views.regions2]).to(device))
        z, r = z.float(), r.float()
        return multi_region_nt_xent(z[:b], z[b:], r[:b], r[b:], alpha, beta, temperature), b

    return LoopParts(model, batch_loss)


def simclr_parts(config: Mapping[str, Any], device: torch.device, strategy: Any) -> LoopParts:
    """SimCLR: NT-Xent of two augmented views."""
    return contrastive_parts(config, device, strategy, score=None)


def lung_weighted_parts(config: Mapping[str, Any], device: torch.device,
                        strategy: Any) -> LoopParts:
    """Option 1: pairs weighted by the lung share of their views."""
    return contrastive_parts(config, device, strategy, score="lungs", default_weight=LUNG_WEIGHT)


def pathology_weighted_parts(config: Mapping[str, Any], device: torch.device,
                             strategy: Any) -> LoopParts:
    """Option 3: pairs weighted by the pathology share of their views."""
    return contrastive_parts(config, device, strategy, score="pathology",
                             default_weight=PATHOLOGY_WEIGHT)


def seg_crop_parts(config: Mapping[str, Any], device: torch.device, strategy: Any) -> LoopParts:
    """Option 4: SimCLR on lung-cropped images (the stages crop; this checks they were told)."""
    if not config.get("crop"):
        raise ValueError("seg_crop pretrains on lung-cropped images: set the crop settings "
                         "(configs/method/seg_crop.yaml's crop: {padding, min_crop_ratio})")
    return contrastive_parts(config, device, strategy, score=None)


_VIEW_COLUMNS = (C.IMAGE, C.IMAGE_KEY)


@register_method("simclr")
def simclr() -> Method:
    """SimCLR: NT-Xent (tau 0.1) of two context-augmented views; no segmentation."""
    return Method("simclr", simclr_parts, columns=_VIEW_COLUMNS, default_model=DEFAULT_MODEL)


@register_method("masked_contrastive")
def masked_contrastive() -> Method:
    """Option 1: NT-Xent pairs weighted by 1 + 0.3 x mean lung share of the two views."""
    return Method("masked_contrastive", lung_weighted_parts,
                  columns=(*_VIEW_COLUMNS, C.ORGANS), default_model=DEFAULT_MODEL)


@register_method("multi_region")
def multi_region() -> Method:
    """Option 2: global + six regional NT-Xent terms (alpha = beta = 1), regional attention
    pooling over the shared backbone (``model.params.regions=6``)."""
    return Method("multi_region", multi_region_parts, columns=_VIEW_COLUMNS,
                  default_model=DEFAULT_MODEL)


@register_method("pathology_aware")
def pathology_aware() -> Method:
    """Option 3: NT-Xent pairs weighted by 1 + 0.3 x mean pathology share of the two views."""
    return Method("pathology_aware", pathology_weighted_parts,
                  columns=(*_VIEW_COLUMNS, C.ORGANS), default_model=DEFAULT_MODEL)


@register_method("seg_crop")
def seg_crop() -> Method:
    """Option 4: SimCLR on images cropped to the lungs + padding (fine-tuning crops too)."""
    return Method("seg_crop", seg_crop_parts, columns=(*_VIEW_COLUMNS, C.ORGANS),
                  default_model=DEFAULT_MODEL, crops_inputs=True)

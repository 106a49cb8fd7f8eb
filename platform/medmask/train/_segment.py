"""Segmentation fine-tuning of a (pretrained) U-Net: AHM's downstream task, on Ray Train.

Source: AHM (IEEE TMI), section V-B: the reconstruction U-Net's body is transferred and the
whole network fine-tuned end to end ("instead of linear probing") with Adam, lr 3e-4, 10% decay
every 3 epochs, batch 4; evaluated with DSC, PPV, SEN, IoU, HD95 and BIoU
(:mod:`medmask.eval.metrics`, per image, averaged; HD95's undefined cases counted).

Targets (``target`` in the config):

- ``"lesion"``: the binary lesion mask (one logit per pixel); the paper's tumour / organ masks.
- ``"organs"``: the organ label map (background, right lung, left lung, heart); metrics are the
  means over the three foreground classes, each scored as a binary mask.

The paper does not state its segmentation loss; this uses the common U-Net choice, the sum of a
pixel-wise cross-entropy (BCE for one class) and the soft Dice loss over foreground classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medmask import columns as C
from medmask.eval.metrics import segmentation_metrics
from medmask.methods import LoopParts
from medmask.models import autocast, create_model, from_pretrained_unet, images_nchw
from medmask.train._checkpoint import load_checkpoint
from medmask.train._loop import run_epochs

TARGETS = {C.LESION: 1, C.ORGANS: 4}  # target column -> output channels
ORGAN_NAMES = ("right_lung", "left_lung", "heart")
_SMOOTH = 1.0  # soft Dice smoothing (loss only; the metrics use the paper's eps)


def check_target(target: str) -> int:
    """Output channels for a segmentation ``target``; ValueError listing the valid ones."""
    if target not in TARGETS:
        raise ValueError(f"segmentation target must be one of {sorted(TARGETS)}, got {target!r}")
    return TARGETS[target]


def build_segmenter(config: dict[str, Any]) -> torch.nn.Module:
    """A U-Net segmenter whose body starts from the pretrained U-Net checkpoint (or random).

    ``config['model']`` names the reconstruction U-Net (``unet_tiny``, ``unet``); the segmenter
    has the same body either way, so pretrained and from-scratch runs differ only in the start.
    """

    unet = create_model(config["model"]["name"], **config["model"].get("params", {}))
    if not hasattr(unet, "body"):
        name = config["model"]["name"]
        raise ValueError(f"segmentation fine-tuning needs a U-Net (unet_tiny, unet), got {name}")
    if config.get("pretrained"):
        unet.load_state_dict(load_checkpoint(config["pretrained"])["model"])
    return from_pretrained_unet(unet, check_target(config["target"]))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B)CE + soft Dice over the foreground classes; ``target`` [B, H, W] integer labels."""
    if logits.shape[1] == 1:
        truth = (target > 0).float()[:, None]
        probs = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, truth)
    else:
        labels = target.long()
        ce = F.cross_entropy(logits, labels)
        probs = torch.softmax(logits, dim=1)[:, 1:]
        truth = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    overlap = (probs * truth).sum(dim=(2, 3))
    total = probs.sum(dim=(2, 3)) + truth.sum(dim=(2, 3))
    dice = (2 * overlap + _SMOOTH) / (total + _SMOOTH)
    return ce + (1 - dice).mean()


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """Integer label maps [B, H, W]: sigmoid > 0.5 for one class, argmax otherwise."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(dim=1).to(torch.uint8)


def score_segmentation(preds: np.ndarray, targets: np.ndarray, num_outputs: int
                       ) -> dict[str, float]:
    """AHM's metrics of label maps [M, H, W]: binary, or the mean over foreground classes."""

    if num_outputs == 1:
        return {k: float(v) for k, v in
                segmentation_metrics(preds > 0, targets > 0).items()}
    per_class = {name: segmentation_metrics(preds == c, targets == c)
                 for c, name in enumerate(ORGAN_NAMES, start=1)}
    keys = [k for k in next(iter(per_class.values())) if k != "num_images"]
    scores = {k: float(np.nanmean([m[k] for m in per_class.values()])) for k in keys}
    scores["hd95_nan_count"] = float(sum(m["hd95_nan_count"] for m in per_class.values()))
    scores["num_images"] = float(len(preds))
    scores.update({f"dice_{name}": float(m["dice"]) for name, m in per_class.items()})
    return scores


@torch.no_grad()
def predict_segmentation(model: torch.nn.Module, dataset: Any, target: str, batch_size: int,
                         device: torch.device | str = "cpu"
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, predicted label maps, target label maps) over a Ray dataset or batches."""
    model.eval()
    images, preds, targets = [], [], []
    batches = (
        dataset.iter_torch_batches(batch_size=batch_size, device=device)
        if hasattr(dataset, "iter_torch_batches")
        else dataset
    )
    for batch in batches:
        x = images_nchw(batch).to(device)
        preds.append(predicted_labels(model(x)).cpu().numpy())
        targets.append(batch[target].cpu().numpy().astype(np.uint8))
        images.append(x[:, 0].float().cpu().numpy())
    if not preds:
        raise ValueError("the evaluation dataset is empty")
    return np.concatenate(images), np.concatenate(preds), np.concatenate(targets)


def segment_parts(config: dict[str, Any], device: torch.device) -> LoopParts:
    """The U-Net segmenter, its (B)CE + soft Dice loss, and AHM's metrics on ``val``."""
    target = config["target"]
    outputs = check_target(target)
    mixed = config.get("mixed_precision", True)  # True, False or "bf16" (any device)

    def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                   epoch: int) -> tuple[torch.Tensor, int]:
        images = images_nchw(batch)
        with autocast(device, mixed):
            logits = model(images)
        return segmentation_loss(logits.float(), batch[target]), images.shape[0]

    def validate(model: torch.nn.Module, val: Any, batch_size: int,
                 device: torch.device) -> dict[str, float]:
        _, preds, targets = predict_segmentation(model, val, target, batch_size * 4, device)
        return score_segmentation(preds, targets, outputs)

    return LoopParts(build_segmenter(config), batch_loss, validate)


def segment_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop: end-to-end segmentation fine-tuning of a U-Net.

    Config keys, besides the skeleton's (:mod:`medmask.train._loop`): ``model`` ({name,
    params} of the reconstruction U-Net), ``pretrained`` (checkpoint folder or None = from
    scratch), ``target`` (``lesion`` | ``organs``), ``mixed_precision``. Datasets: ``train``
    and ``val`` (scored on rank 0 every epoch: ``val/dice`` etc.).
    """
    run_epochs(config, segment_parts, what="segmentation")

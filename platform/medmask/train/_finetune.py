"""Fine-tuning loop: linear probing or full fine-tuning of any encoder with ``encode``.

The classifier sees the pretrained model only through ``encode(images) -> [B, D]`` (RGMIM eq. 4:
y = GAP(LN(z_L)), then a linear head), so MAE ViTs, U-Nets and later families (CLIP towers,
contrastive CNNs) share this path. Cross-entropy for single-label sets, BCE for multi-label.
Optimizer and schedule as pretraining (RGMIM Table 1: AdamW, 30 fine-tuning epochs).

The ``recipe`` (:class:`~medmask.train.FinetuneRecipe`) adds MAE's fine-tuning regularisation
(``main_finetune.py``): layer-wise lr decay (in the optimizer config), drop path on the
encoder's blocks, label smoothing, and a light augmentation of every training batch (flip,
small rotation, brightness and contrast, keyed per image and epoch like the masks, applied to
the image and its organ map together); validation picks the epoch (``select_on``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medmask import columns as C
from medmask.eval import classification_metrics
from medmask.methods import LoopParts
from medmask.models import (
    EncoderClassifier,
    autocast,
    create_model,
    images_nchw,
    load_local_weights,
    set_drop_path,
)
from medmask.segmentation import (
    AugmentConfig,
    batch_generator,
    context_augment,
    keyed_augment_params,
)
from medmask.train._checkpoint import load_checkpoint
from medmask.train._loop import run_cells, run_epochs


def build_classifier(config: dict[str, Any]) -> torch.nn.Module:
    """The encoder + head; the encoder starts from ``pretrained`` (a pretraining checkpoint
    folder) or ``init_weights`` ({weights, prefix}: a local weights file, the Transfer
    baseline), else from random weights (From Scratch)."""

    encoder = create_model(config["model"]["name"], **config["model"].get("params", {}))
    pretrained = config.get("pretrained")
    if pretrained:
        state = load_checkpoint(pretrained)
        encoder.load_state_dict(state["model"])
    init = config.get("init_weights") or {}
    if init.get("weights"):  # the "Transfer" baseline: local (e.g. ImageNet) weights

        load_local_weights(encoder, init["weights"], init.get("prefix", ""))
    head = config["head"]
    probe = config.get("mode", "full") == "linear_probe"
    drop_path = float((config.get("recipe") or {}).get("drop_path", 0.0))
    if drop_path > 0 and not probe:
        set_drop_path(encoder, drop_path)
    return EncoderClassifier(
        encoder,
        num_classes=int(head["num_classes"]),
        multilabel=bool(head.get("multilabel", False)),
        freeze_encoder=probe,
    )


def classification_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor],
                        multilabel: bool, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy on ``label`` (with ``label_smoothing``) or BCE-with-logits on multi-hot
    ``labels`` (no smoothing)."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, batch[C.LABELS].float())
    return F.cross_entropy(logits, batch[C.LABEL].long(), label_smoothing=label_smoothing)


def augmented_images(batch: dict[str, torch.Tensor], augment: dict[str, Any] | None, *,
                     seed: int, epoch: int, repeats: int = 1) -> torch.Tensor:
    """The batch's images [B, 1, H, W], augmented when ``augment`` (:class:`AugmentConfig`
    fields) is set: per-image parameters from (seed, epoch, image key), so an image gets the
    same view on any worker and any batch layout, and a new one every epoch.

    In an epoch that passes over a small subset ``repeats`` times
    (:func:`~medmask.train._stages.repeated`), copy ``c`` of an image (column
    ``subset_copy``) gets the view of epoch ``epoch * repeats + c``: the views the same steps
    would get with one copy and ``repeats`` times the epochs."""
    images = images_nchw(batch)
    if not augment:
        return images
    keys = batch[C.IMAGE_KEY].detach().cpu().numpy()
    views: Any = epoch
    if C.SUBSET_COPY in batch:
        views = epoch * int(repeats) + batch[C.SUBSET_COPY].detach().cpu().numpy()
    config = AugmentConfig(**augment)
    params = keyed_augment_params(keys, seed, views, 1, config)[0]
    out = context_augment(images, batch.get(C.ORGANS), config=config, params=params,
                          generator=batch_generator(keys, seed, views))
    return out.images


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Any, batch_size: int, multilabel: bool,
            device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets over a whole Ray dataset (or iterable of batches)."""
    model.eval()
    probs, targets = [], []
    batches = (
        dataset.iter_torch_batches(batch_size=batch_size, device=device)
        if hasattr(dataset, "iter_torch_batches")
        else dataset
    )
    key = C.LABELS if multilabel else C.LABEL
    for batch in batches:
        logits = model(images_nchw(batch).to(device))
        p = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)
        probs.append(p.float().cpu().numpy())
        targets.append(batch[key].cpu().numpy())
    return np.concatenate(probs), np.concatenate(targets)


def finetune_parts(config: dict[str, Any], device: torch.device) -> LoopParts:
    """The classifier, its classification loss, and validation metrics on ``val``."""
    multilabel = bool(config["head"].get("multilabel", False))
    mixed = config.get("mixed_precision", True)  # True, False or "bf16" (any device)
    recipe = config.get("recipe") or {}
    smoothing = float(recipe.get("label_smoothing", 0.0))
    augment, seed = recipe.get("augment"), int(config["seed"])
    repeats = int(config.get("subset_repeats") or 1)

    def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                   epoch: int) -> tuple[torch.Tensor, int]:
        images = augmented_images(batch, augment, seed=seed, epoch=epoch, repeats=repeats)
        with autocast(device, mixed):
            logits = model(images)
            return (classification_loss(logits.float(), batch, multilabel, smoothing),
                    images.shape[0])

    def validate(model: torch.nn.Module, val: Any, batch_size: int,
                 device: torch.device) -> dict[str, float]:
        probs, targets = predict(model, val, batch_size, multilabel, device)
        scores = classification_metrics(probs, targets, multilabel=multilabel,
                                        class_names=config["head"].get("class_names"))
        return {k: v for k, v in scores.items() if _is_number(v)}

    return LoopParts(build_classifier(config), batch_loss, validate)


def finetune_cells_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop over several fine-tuning cells (label fractions x modes x
    learning rates of one initialisation) in one run (:func:`~medmask.train._loop.run_cells`):
    each cell as :func:`finetune_loop` would train it alone, then rank 0 predicts the ``test``
    dataset with the cell's selected weights; the probabilities and targets are the cell's
    result in the run's checkpoint."""
    run_cells(config, finetune_parts, finish_finetune_cell, what="fine-tuning")


def finish_finetune_cell(model: torch.nn.Module, device: torch.device,
                         config: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuning cell's result: its test probabilities and targets (tensors: checkpoints
    load with ``weights_only``)."""
    import ray.train  # defer: ray

    probs, targets = predict(model, ray.train.get_dataset_shard("test"), 64,
                             bool(config["head"].get("multilabel", False)), device)
    return {"probs": torch.from_numpy(probs), "targets": torch.from_numpy(targets)}


def finetune_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop for classification fine-tuning.

    Config keys, besides the skeleton's (:mod:`medmask.train._loop`): ``model`` ({name,
    params}), ``pretrained`` (checkpoint folder or None for from-scratch), ``init_weights``,
    ``mode`` (``linear_probe`` | ``full``), ``head`` ({num_classes, multilabel,
    class_names}), ``mixed_precision``. Datasets: ``train`` and ``val``.
    """
    run_epochs(config, finetune_parts, what="fine-tuning")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.floating | np.integer)

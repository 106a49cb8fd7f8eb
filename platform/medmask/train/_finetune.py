"""Fine-tuning loop: linear probing or full fine-tuning of any encoder with ``encode``.

The classifier sees the pretrained model only through ``encode(images) -> [B, D]`` (RGMIM eq. 4:
y = GAP(LN(z_L)), then a linear head), so MAE ViTs, U-Nets and later families (CLIP towers,
contrastive CNNs) share this path. Cross-entropy for single-label sets, BCE for multi-label.
Optimizer and schedule as pretraining (RGMIM Table 1: AdamW, 30 fine-tuning epochs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medmask import columns as C
from medmask.eval import classification_metrics
from medmask.models import EncoderClassifier, create_model, load_local_weights
from medmask.train._checkpoint import load_checkpoint
from medmask.train._loop_utils import (
    autocast,
    images_nchw,
    optimization_state,
    quiet_data_progress,
    train_device,
    train_epoch,
    unwrap,
)
from medmask.train._pretrain import _EpochLogger, _report


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
    return EncoderClassifier(
        encoder,
        num_classes=int(head["num_classes"]),
        multilabel=bool(head.get("multilabel", False)),
        freeze_encoder=config.get("mode", "full") == "linear_probe",
    )


def classification_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor],
                        multilabel: bool) -> torch.Tensor:
    """Cross-entropy on ``label`` or BCE-with-logits on multi-hot ``labels``."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, batch[C.LABELS].float())
    return F.cross_entropy(logits, batch[C.LABEL].long())


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


def finetune_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop for classification fine-tuning.

    Config keys: ``model`` ({name, params}), ``pretrained`` (checkpoint folder or None for
    from-scratch), ``mode`` (``linear_probe`` | ``full``), ``head`` ({num_classes,
    multilabel, class_names}), ``optim``, ``batch_size``, ``epochs``, ``steps_per_epoch``,
    ``seed``, ``mixed_precision``, optional ``tracking``. Datasets: ``train`` (split across
    workers) and ``val`` (whole, evaluated on rank 0 every epoch).
    """
    import ray.train
    import ray.train.torch

    torch.manual_seed(int(config["seed"]))
    quiet_data_progress()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = train_device()
    multilabel = bool(config["head"].get("multilabel", False))

    model = build_classifier(config)
    batch_size = int(config["batch_size"])
    epochs = int(config["epochs"])
    optimizer, scheduler, start_epoch = optimization_state(model, config)
    model = ray.train.torch.prepare_model(model)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    per_worker_batch = max(1, batch_size // world)

    logger = _EpochLogger(config.get("tracking"), rank)
    for epoch in range(start_epoch, epochs):
        model.train()
        batches = train_shard.iter_torch_batches(
            batch_size=per_worker_batch, prefetch_batches=2, device=device
        )

        def batch_loss(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
            images = images_nchw(batch)
            with autocast(device, bool(config.get("mixed_precision", True))):
                logits = model(images)
                return classification_loss(logits.float(), batch, multilabel), images.shape[0]

        metrics: dict[str, Any] = train_epoch(batches, batch_loss, optimizer, scheduler,
                                              epoch=epoch, what="fine-tuning")
        if rank == 0 and val_shard is not None:
            probs, targets = predict(unwrap(model), val_shard, per_worker_batch, multilabel, device)
            val = classification_metrics(
                probs, targets, multilabel=multilabel,
                class_names=config["head"].get("class_names"),
            )
            metrics.update({f"val/{k}": v for k, v in val.items() if _is_number(v)})
        logger.log(metrics, step=epoch)
        _report(metrics, rank, epoch, model, optimizer, scheduler, config)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.floating | np.integer)

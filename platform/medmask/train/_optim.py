"""Optimizer and learning-rate schedule of masked image modeling.

RGMIM Table 1 gives AdamW (beta1 0.9, beta2 0.95), weight decay 0.05, base learning rate 1.5e-4
and batch 256; what the paper leaves open follows MAE's conventions: the absolute learning rate
is ``lr = base_lr * batch / 256`` and the schedule is a linear warmup then a half-cycle cosine.

The AHM paper's U-Net settings are the other preset: plain Adam at a fixed learning rate
(pretraining 2e-4; segmentation fine-tuning 3e-4 "10% decay every 3 epochs"), i.e.
``optimizer="adam", scale_lr=False, schedule="step", decay_every_epochs=3, decay_factor=0.9``.

Fine-tuning a ViT follows MAE's recipe (``main_finetune.py``, ``util/lr_decay.py``): layer-wise
lr decay, the parameters of layer ``i`` (0 = patch embedding, class token and position
embedding; ``i`` = block ``i - 1``; ``L + 1`` = the final norm and the head) trained at
``lr * layer_decay ** (L + 1 - i)``, so the first layers of a pretrained encoder move least.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer + schedule settings (defaults: RGMIM Table 1, AdamW + warmup-cosine).

    Attributes:
        optimizer: ``"adamw"`` (RGMIM/MAE) or ``"adam"`` (AHM).
        schedule: ``"cosine"`` (warmup then half-cycle cosine) or ``"step"`` (multiply by
            ``decay_factor`` every ``decay_every_epochs``, after the warmup).
        scale_lr: apply MAE's rule lr = base_lr * batch / ``reference_batch`` (False: lr =
            base_lr, as the AHM paper states its rates).
    """

    base_lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    reference_batch: int = 256
    optimizer: str = "adamw"
    schedule: str = "cosine"
    scale_lr: bool = True
    decay_every_epochs: float = 1.0
    decay_factor: float = 1.0
    layer_decay: float = 1.0  # MAE fine-tuning: 0.75; 1 = one lr for every layer

    def __post_init__(self) -> None:
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.decay_every_epochs <= 0 or not 0 < self.decay_factor <= 1:
            raise ValueError(
                f"need decay_every_epochs > 0 and 0 < decay_factor <= 1, got "
                f"{self.decay_every_epochs}, {self.decay_factor}")

    def absolute_lr(self, batch_size: int) -> float:
        """MAE's linear scaling rule lr = base_lr * batch / 256 (or base_lr if not scaled)."""
        if not self.scale_lr:
            return self.base_lr
        return self.base_lr * batch_size / self.reference_batch


OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "step")


NO_DECAY_SUFFIXES = ("pos_embed", "cls_token", "mask_token")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING = ("cls_token", "pos_embed", "patch_embed", "mask_token")


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """MAE's rule: no weight decay on biases, norms (1-d) and the position embeddings and
    tokens (``pos_embed``, ``decoder_pos_embed``, ``cls_token``, ``mask_token``)."""
    return param.ndim <= 1 or name.endswith(NO_DECAY_SUFFIXES)


def layer_id(name: str, num_layers: int) -> int:
    """MAE's ``get_layer_id_for_vit``: 0 for the embeddings, ``i + 1`` for ``blocks.i``,
    ``num_layers + 1`` for everything after the blocks (final norm, head)."""
    block = _BLOCK.search(name)
    if block is not None:
        return int(block.group(1)) + 1
    tail = name.removeprefix("encoder.")  # a classifier's encoder, or the bare encoder
    return 0 if tail.startswith(_EMBEDDING) else num_layers + 1


def parameter_groups(model: torch.nn.Module, weight_decay: float,
                     layer_decay: float = 1.0) -> list[dict]:
    """Optimizer groups by (layer, weight decay): each group holds ``lr_scale`` =
    ``layer_decay ** (L + 1 - layer)`` (1 for every group when ``layer_decay`` = 1) and its
    parameter names (``names``, for tests and logs). L = the number of ``blocks.i`` found."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    block_ids = {int(m.group(1)) for n, _ in named if (m := _BLOCK.search(n))}
    num_layers = max(block_ids) + 1 if block_ids else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named:
        layer = layer_id(name, num_layers) if layer_decay < 1 else num_layers + 1
        skip = no_weight_decay(name, param)
        group = groups.setdefault((layer, skip), {
            "params": [], "names": [], "weight_decay": 0.0 if skip else weight_decay,
            "lr_scale": layer_decay ** (num_layers + 1 - layer)})
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    model: torch.nn.Module, cfg: OptimizerConfig, batch_size: int
) -> torch.optim.Optimizer:
    """AdamW (or Adam) over :func:`parameter_groups`: no weight decay on biases, norms,
    position embeddings and tokens (MAE's groups; Adam's weight decay is the L2 kind, 0 in the
    AHM presets), each group at ``lr * lr_scale`` (layer-wise lr decay)."""
    lr = cfg.absolute_lr(batch_size)
    groups = parameter_groups(model, cfg.weight_decay, cfg.layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
        group.pop("names")
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(groups, lr=lr, betas=tuple(cfg.betas))


def warmup_cosine_factor(progress_epochs: float, total_epochs: float, cfg: OptimizerConfig,
                         peak_lr: float) -> float:
    """Multiplier of the peak lr at a fractional epoch (MAE ``lr_sched.adjust_learning_rate``)."""
    if cfg.warmup_epochs > 0 and progress_epochs < cfg.warmup_epochs:
        return progress_epochs / cfg.warmup_epochs
    span = max(total_epochs - cfg.warmup_epochs, 1e-12)
    t = min(max((progress_epochs - cfg.warmup_epochs) / span, 0.0), 1.0)
    floor = cfg.min_lr / peak_lr if peak_lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def step_decay_factor(progress_epochs: float, cfg: OptimizerConfig) -> float:
    """Warmup, then ``decay_factor ** floor((epoch - warmup) / decay_every_epochs)`` (AHM)."""
    if cfg.warmup_epochs > 0 and progress_epochs < cfg.warmup_epochs:
        return progress_epochs / cfg.warmup_epochs
    drops = math.floor((progress_epochs - cfg.warmup_epochs) / cfg.decay_every_epochs + 1e-9)
    return cfg.decay_factor ** max(drops, 0)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: OptimizerConfig,
    *,
    steps_per_epoch: int,
    epochs: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule (warmup + cosine, or step decay) over ``epochs * steps_per_epoch``."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    first = optimizer.param_groups[0]
    peak = first["lr"] / first.get("lr_scale", 1.0)  # the unscaled peak (min_lr's reference)

    def factor(step: int) -> float:
        if cfg.schedule == "step":
            return step_decay_factor(step / steps_per_epoch, cfg)
        return warmup_cosine_factor(step / steps_per_epoch, float(epochs), cfg, peak)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

"""Classification on top of any encoder, timm baselines, and local weight loading.

RGMIM (Sec. 3.4, eq. 4): the pretrained encoder, LayerNorm, global average pooling,
y = GAP(LN(z_L)), then a linear head. Here LN + GAP live in each encoder's ``encode`` (the MAE
ViT's), so :class:`EncoderClassifier` sees the encoder only through ``encode(images) -> [B, D]``
and any encoder (ViT, U-Net, timm CNN, later a CLIP tower) plugs into the same path. Baselines
(RGMIM Table 2): a timm ResNet-50 "From Scratch", and "Transfer" models whose ImageNet weights
come from a local file (:func:`load_local_weights`); nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import DropPath, trunc_normal_
from timm.models import adapt_input_conv
from torch import nn

from medmask.models._interface import Encoder
from medmask.models._registry import register_model


class EncoderClassifier(nn.Module):
    """``head(encoder.encode(images))``: logits [B, num_classes].

    Args:
        encoder: anything with ``encode(images) -> [B, D]`` and ``embed_dim`` (= D).
        num_classes: output logits.
        multilabel: the labels are multi-hot (the loss is sigmoid + BCE, the training loop's
            business); single-label means softmax + cross-entropy.
        freeze_encoder: linear probing: the encoder's parameters get no gradient, it stays in
            eval mode and runs under ``torch.no_grad``; the head is MAE's linear-probe head,
            a BatchNorm without affine parameters before the linear layer (features of a
            frozen MIM encoder are badly scaled for a linear classifier).

    Parameters the encoder declares unused by ``encode`` (``decoder_parameters()``, e.g. the MAE
    decoder) are frozen, so DDP does not wait for gradients that never come.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, multilabel: bool = False,
                 freeze_encoder: bool = False) -> None:
        super().__init__()
        if not isinstance(encoder, Encoder):
            raise ValueError(
                f"{type(encoder).__name__} is not an encoder: it needs encode(images) -> [B, D] "
                "and an embed_dim attribute"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.freeze_encoder = freeze_encoder
        linear = nn.Linear(int(encoder.embed_dim), num_classes)
        trunc_normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        self.head = (nn.Sequential(nn.BatchNorm1d(int(encoder.embed_dim), affine=False,
                                                  eps=1e-6), linear)
                     if freeze_encoder else linear)
        for parameter in getattr(encoder, "decoder_parameters", list)():
            parameter.requires_grad_(False)
        if freeze_encoder:
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> EncoderClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> logits [B, num_classes]."""
        if self.freeze_encoder:
            with torch.no_grad():
                features = self.encoder.encode(images)
        else:
            features = self.encoder.encode(images)
        return self.head(features)


def set_drop_path(encoder: nn.Module, rate: float) -> int:
    """Stochastic depth on the encoder's transformer blocks (MAE fine-tuning's ``drop_path``):
    block i of L drops its residual branches with probability ``rate * i / (L - 1)`` (timm's
    linear rule). Returns the number of blocks changed (0 for encoders without ``blocks``).

    Parameter-free, so a pretrained state dict loads the same before or after.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path must be in [0, 1), got {rate!r}")
    blocks = [b for b in getattr(encoder, "blocks", ()) if hasattr(b, "drop_path1")]
    for i, block in enumerate(blocks):
        p = rate * i / max(len(blocks) - 1, 1)
        block.drop_path1 = DropPath(p) if p > 0 else nn.Identity()
        block.drop_path2 = DropPath(p) if p > 0 else nn.Identity()
    return len(blocks)


class TimmEncoder(nn.Module):
    """A timm model (``pretrained=False``, no classifier) exposed as an :class:`Encoder`.

    ``encode`` returns timm's pooled pre-logit features [B, num_features]. Load ImageNet
    weights with ``load_local_weights(encoder.backbone, path)``.
    """

    def __init__(self, model_name: str = "resnet50", in_chans: int = 1, **timm_kwargs: Any) -> None:
        super().__init__()
        self.backbone = timm.create_model(
            model_name, pretrained=False, in_chans=in_chans, num_classes=0, **timm_kwargs
        )
        self.embed_dim = int(self.backbone.num_features)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> pooled features [B, embed_dim]."""
        return self.backbone(images)


@dataclass
class LoadReport:
    """What :func:`load_local_weights` did with each key of the file."""

    path: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # input convs re-summed to in_chans
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # same name, other shape: skipped

    def summary(self) -> str:
        return (
            f"{self.path}: loaded {len(self.loaded)} tensors ({len(self.adapted)} adapted), "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape-mismatched {len(self.mismatched)}"
        )


def load_local_weights(model: nn.Module, path: str | Path, prefix: str = "") -> LoadReport:
    """Load a local state dict (e.g. ImageNet weights for the "Transfer" baseline) into ``model``.

    ``torch.load(path, weights_only=True)``; a ``{"state_dict": ...}`` or ``{"model": ...}``
    wrapper and DDP's ``module.`` prefix are unwrapped; ``prefix`` is prepended to the file's
    keys. A 4-D weight that differs only in input channels (RGB stem -> grayscale) is adapted
    with timm's ``adapt_input_conv``; other shape mismatches are skipped. Every key is counted
    in the returned :class:`LoadReport`, nothing is dropped silently.

    Raises:
        ValueError: when ``path`` does not exist, does not hold a state dict, or no tensor of it
            fits ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist (weights load from local "
                         "files only)")
    state = _unwrap_state(torch.load(path, map_location="cpu", weights_only=True), path)
    state = {prefix + _strip(k, "module."): v for k, v in state.items()}
    own = model.state_dict()
    report = LoadReport(str(path))
    fitting: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tensor.shape == own[key].shape:
            fitting[key] = tensor
        elif tensor.ndim == 4 and own[key].ndim == 4 and tensor.shape[0] == own[key].shape[0] \
                and tensor.shape[2:] == own[key].shape[2:]:
            fitting[key] = adapt_input_conv(own[key].shape[1], tensor, base_chans=tensor.shape[1])
            report.adapted.append(key)
        else:
            report.mismatched.append(key)
    if not fitting:
        raise ValueError(f"no tensor of {str(path)!r} fits {type(model).__name__}: "
                         f"{len(report.unexpected)} unexpected, {len(report.mismatched)} "
                         "shape-mismatched keys")
    model.load_state_dict(fitting, strict=False)
    report.loaded = sorted(fitting)
    report.missing = sorted(set(own) - set(fitting))
    return report


def _unwrap_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict of tensors")
    return obj


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


# ---------------------------------------------------------------------------- registry
@register_model
def resnet50(**overrides: Any) -> TimmEncoder:
    """timm ResNet-50 baseline (RGMIM Table 2), grayscale, random init; ``encode`` -> [B, 2048]."""
    return TimmEncoder(**{"model_name": "resnet50", "in_chans": 1, **overrides})

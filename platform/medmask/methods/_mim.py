"""Masked image modeling: MAE (random masks), RGMIM (region-guided), AHM (policy masks).

One loss for all three and for every model family (MAE ViT, SimMIM-style U-Net): the model is
called as ``model(images, mask) -> output`` with ``output.patch_loss`` [B, N], and the loss is
its mean over the masked patches (RGMIM eq. 5, :func:`medmask.models.masked_mean_loss`). The
three methods differ only in where they mask (the ``masking`` strategy), drawn anew every
epoch from keyed per-image seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medmask import columns as C
from medmask.masking import epoch_masks
from medmask.methods._registry import LoopParts, Method, register_method
from medmask.models import autocast, create_model, images_nchw, masked_mean_loss


def masked_image_modeling(config: Mapping[str, Any], device: torch.device,
                          strategy: Any) -> LoopParts:
    """The MIM loop's parts: the configured model, and the masked-patch loss of a batch under
    masks of ``strategy`` at ``config['masking']['ratio']`` for the batch's epoch."""
    model = create_model(config["model"]["name"], **config["model"].get("params", {}))
    grid = model.grid
    ratio = float(config["masking"]["ratio"])
    seed = int(config["seed"])
    mixed = config.get("mixed_precision", True)  # True, False or "bf16" (also on the CPU)

    def batch_loss(net: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                   epoch: int) -> tuple[torch.Tensor, int]:
        images = images_nchw(batch)
        mask = epoch_masks(strategy, batch, grid, ratio, seed=seed, epoch=epoch).to(device)
        with autocast(device, mixed):
            output = net(images, mask)
        return masked_mean_loss(output.patch_loss.float(), mask), images.shape[0]

    return LoopParts(model, batch_loss)


def _mim(name: str, masking: str) -> Method:
    return Method(name, masked_image_modeling, columns=(C.IMAGE_KEY,), uses_masks=True,
                  default_masking=masking)


@register_method("mae")
def mae() -> Method:
    """MAE: random patch masking (He et al.; Mask Creation Methodology)."""
    return _mim("mae", "random")


@register_method("rgmim")
def rgmim() -> Method:
    """RGMIM: region-guided masking of the patches that overlap the organ mask."""
    return _mim("rgmim", "rgmim")


@register_method("ahm")
def ahm() -> Method:
    """AHM: adaptive hard masking by a trained policy (its loaded network is the strategy's)."""
    return _mim("ahm", "ahm")

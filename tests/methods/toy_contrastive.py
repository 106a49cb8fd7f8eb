"""A non-MIM learning method for the registry test: two views of each image, an NT-Xent loss.

Named by its import path (``tests.methods.toy_contrastive:toy_contrastive``) so that every Ray
worker resolves it without a registration step in the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medmask import columns as C
from medmask.methods import LoopParts, Method
from medmask.models import images_nchw

MODEL = "tests.methods.toy_contrastive:toy_encoder"


class ToyEncoder(nn.Module):
    """Two strided convolutions and global average pooling: ``encode(images) -> [B, 16]``."""

    embed_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.projection = nn.Linear(16, 16)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encode(images))


def toy_encoder() -> ToyEncoder:
    return ToyEncoder()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2B views (each view's positive is its pair)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def two_views(config: Mapping[str, Any], device: torch.device, strategy: Any) -> LoopParts:
    model = ToyEncoder()
    generator = torch.Generator().manual_seed(int(config["seed"]))

    def batch_loss(net: nn.Module, batch: Mapping[str, torch.Tensor],
                   epoch: int) -> tuple[torch.Tensor, int]:
        images = images_nchw(batch)
        noise = torch.randn((2, *images.shape), generator=generator).to(device) * 0.05
        view1, view2 = images + noise[0], torch.flip(images, dims=[3]) + noise[1]
        return nt_xent(net(view1), net(view2)), images.shape[0]

    return LoopParts(model, batch_loss)


def toy_contrastive() -> Method:
    return Method("toy_contrastive", two_views, columns=(C.IMAGE,), default_model=MODEL)

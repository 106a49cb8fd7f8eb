"""Option 5 of the Segmentation-Guided SSL guide: segmentation-guided attention in the encoder.

The same five stages as :class:`~medmask.models.ContrastiveCNN` (64/128/256/512/512, ``width``
multiplies them), with the guide's additions (option 5, "Architecture Components"):

- a spatial attention module after stages 3 and 4: ``Conv(C -> C/8) -> ReLU -> Conv(C/8 -> 1)
  -> Sigmoid`` (1 x 1 convolutions: the guide names the channel reduction only), multiplied
  into the features: ``x <- x * a``;
- a segmentation branch after stage 3's attention: ``Conv(256 -> 128) -> BN -> ReLU ->
  Conv(128 -> 64) -> BN -> ReLU -> Conv(64 -> 1) -> Sigmoid`` (3 x 3, 3 x 3, 1 x 1), the
  predicted mask m at stage 3's resolution (H/8; the guide's ``resize`` to the feature size is
  the identity), re-weighting the features ``x <- x * (1 + m)``;
- a projection head conditioned on the segmentation score ``s = mean(m)`` (the guide's training
  loop: ``seg_mask.mean(dim=[1, 2, 3])``; ``SegmentationGuidedProjectionHead(feat_dim=512,
  proj_dim=256)`` is given by its signature only). Our reading: the score joins the 512-d
  feature as one more input, ``Linear(512 + 1, 512) -> ReLU -> Linear(512, 256)``;
- a decoder reconstructing the image from the 512-d feature (the guide's ``Decoder(feat_dim=512,
  img_size=224)``: :class:`~medmask.models._contrastive.ImageDecoder`, shared with the
  reconstruction control ``simclr_recon``).

``encode`` returns the attended, mask-weighted 512-d feature (what fine-tuning reads);
``model(images, reconstruct=n)`` returns all of it as :class:`SegAttentionOutput`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from medmask.models._contrastive import ContrastiveCNN, _conv_bn_relu, check_decodable
from medmask.models._registry import build_with_overrides, register_model


class SegAttentionOutput(NamedTuple):
    """What ``SegAttentionCNN(images)`` returns (a NamedTuple: DDP sees the tensors).

    Attributes:
        projection: [B, proj_dim], the NT-Xent input (conditioned on the score).
        features: [B, embed_dim], what ``encode`` returns.
        mask: the predicted segmentation mask [B, 1, H/8, W/8], values in (0, 1).
        attention3, attention4: the spatial attention maps after stages 3 and 4,
            [B, 1, H/8, W/8] and [B, 1, H/16, W/16].
        reconstruction: [n, 1, H, W] of the first ``reconstruct`` inputs (None when 0).
    """

    projection: torch.Tensor
    features: torch.Tensor
    mask: torch.Tensor
    attention3: torch.Tensor
    attention4: torch.Tensor
    reconstruction: torch.Tensor | None


class SpatialAttention(nn.Module):
    """``Conv(C -> C/8) -> ReLU -> Conv(C/8 -> 1) -> Sigmoid``: an attention map [B, 1, h, w]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        reduced = max(1, channels // 8)
        self.body = nn.Sequential(nn.Conv2d(channels, reduced, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(reduced, 1, 1), nn.Sigmoid())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class SegAttentionCNN(ContrastiveCNN):
    """The five-stage CNN with option 5's attention, segmentation branch, conditioned head and
    decoder.

    Args:
        in_chans: input channels (1: grayscale X-rays).
        width: multiplier of the stage channels 64/128/256/512/512.
        proj_hidden: hidden width of the projection head (None: the feature width).
        proj_dim: output width of the projection head (the guide's 256).
        img_size: the side the decoder reconstructs (a multiple of 32: 224 -> 7 x 7 start).

    ``decoder_parameters`` (frozen in fine-tuning) are the inherited ones: the projection head
    and the decoder; the attention modules and the segmentation branch are ``encode``'s.
    """

    def __init__(self, in_chans: int = 1, width: float = 1.0, proj_hidden: int | None = None,
                 proj_dim: int = 256, img_size: int = 224) -> None:
        super().__init__(in_chans, width, proj_hidden, proj_dim, img_size=img_size)
        c3, c4 = self.channels[2], self.channels[3]
        self.attention3 = SpatialAttention(c3)
        self.attention4 = SpatialAttention(c4)
        half, quarter = max(1, round(c3 / 2)), max(1, round(c3 / 4))  # 256 -> 128 -> 64 -> 1
        self.segmentation = nn.Sequential(*_conv_bn_relu(c3, half), *_conv_bn_relu(half, quarter),
                                          nn.Conv2d(quarter, 1, 1), nn.Sigmoid())
        hidden = proj_hidden or self.embed_dim
        self.projection = nn.Sequential(nn.Linear(self.embed_dim + 1, hidden),
                                        nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))

    def attended(self, images: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features [B, embed_dim], mask, attention after stage 3, after stage 4)."""
        if images.ndim != 4:
            raise ValueError(f"SegAttentionCNN takes images [B, C, H, W], got shape "
                             f"{tuple(images.shape)}")
        x = self.stages[:3](images)
        a3 = self.attention3(x)
        x = x * a3
        mask = self.segmentation(x)
        x = self.stages[3](x * (1.0 + mask))
        a4 = self.attention4(x)
        return self.stages[4](x * a4), mask, a3, a4

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> the attended, mask-weighted features [B, embed_dim]."""
        return self.attended(images)[0]

    def forward(self, images: torch.Tensor,  # type: ignore[override]
                region_masks: torch.Tensor | None = None, reconstruct: int = 0
                ) -> SegAttentionOutput:
        """Images [B, C, H, W] -> :class:`SegAttentionOutput`; the decoder reconstructs the
        first ``reconstruct`` of them (view 1 of a ``[view 1; view 2]`` batch)."""
        if region_masks is not None:
            raise ValueError("SegAttentionCNN has no regional pooling (that is option 2)")
        features, mask, a3, a4 = self.attended(images)
        score = mask.mean(dim=(1, 2, 3))
        projection = self.projection(torch.cat([features, score[:, None].to(features)], dim=1))
        reconstruction = None
        if reconstruct:
            reconstruction = check_decodable(images, self.decoder)(features[:reconstruct])
        return SegAttentionOutput(projection, features, mask, a3, a4, reconstruction)


_FULL: dict[str, Any] = {"in_chans": 1, "width": 1.0, "proj_dim": 256, "img_size": 224}
_TINY: dict[str, Any] = {"in_chans": 1, "width": 0.125, "proj_dim": 32, "img_size": 64}


@register_model
def seg_attention_cnn(**overrides: Any) -> SegAttentionCNN:
    """Option 5 at the guide's widths: 64/128/256/512/512, projection 513 -> 512 -> 256, 224 px."""
    return build_with_overrides(SegAttentionCNN, "seg_attention_cnn", _FULL, overrides)


@register_model
def seg_attention_cnn_tiny(**overrides: Any) -> SegAttentionCNN:
    """CPU-sized: width 1/8 (8/16/32/64/64), projection 65 -> 64 -> 32, 64-px decoder."""
    return build_with_overrides(SegAttentionCNN, "seg_attention_cnn_tiny", _TINY, overrides)

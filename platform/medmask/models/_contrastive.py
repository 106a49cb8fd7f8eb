"""The contrastive backbone of the segmentation-guided SSL methods (SimCLR and options 1-4).

Segmentation-Guided SSL guide, option 5's encoder without its attention modules and
segmentation branch: five stages of 64/128/256/512/512 channels, 224 -> 112 -> 56 -> 28 -> 14
(stages 1-4: a stride-2 3x3 convolution and a 3x3 convolution, each with BatchNorm and ReLU),
then stage 5 (a 3x3 convolution, BatchNorm, ReLU) and global average pooling to 1 x 1: the
512-d feature ``encode`` returns. SimCLR's projection head (Chen et al., 2020) maps it to the
space the NT-Xent loss compares: Linear(512, 512) -> ReLU -> Linear(512, 256) (256 = the
guide's ``proj_dim``). ``width`` multiplies every stage's channels (CPU tests use 1/8).

Option 2 (multi-region) adds regional attention pooling over the same stages (``regions`` > 0):
per region r a 1x1 convolution gives attention logits over stage 5's feature map, restricted to
the region by adding ``log`` of the region's coverage of each cell (area-downsampled mask), a
softmax over positions, and the attention-weighted mean of the features is projected by the
shared head: ``model(images, region_masks) -> (projections [B, P], regional [B, R, P])``.

A decoder (``img_size`` > 0; the reconstruction control ``simclr_recon`` and option 5) maps the
512-d feature back to the image, the guide's ``Decoder(feat_dim=512, img_size=224)`` (given by
its signature only; :class:`ImageDecoder`): ``model(images, reconstruct=n) -> (projections,
reconstruction of the first n images)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medmask.models._registry import build_with_overrides, register_model

STAGE_CHANNELS = (64, 128, 256, 512, 512)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class ImageDecoder(nn.Module):
    """A 512-d feature -> an image: ``Linear(512 -> 512 x (S/32)^2)``, five (nearest 2x
    upsampling, 3 x 3 conv, BN, ReLU) blocks through the stage channels in reverse (512, 512,
    256, 128, 64, 64 at width 1), a 1 x 1 conv to the image channels and a sigmoid ([0, 1]).

    Args:
        channels: the encoder's five stage channels.
        out_chans: image channels.
        img_size: the reconstructed side S, a multiple of 32.
    """

    def __init__(self, channels: tuple[int, ...], out_chans: int, img_size: int) -> None:
        super().__init__()
        if img_size < 32 or img_size % 32:
            raise ValueError(f"the decoder doubles an (img_size / 32)-square grid five times: "
                             f"img_size must be a multiple of 32, got {img_size!r}")
        c1, c2, c3, c4, c5 = channels
        self.img_size, self.start = img_size, img_size // 32
        self.linear = nn.Linear(c5, c5 * self.start ** 2)
        blocks: list[nn.Module] = []
        for c_in, c_out in zip((c5, c5, c4, c3, c2), (c5, c4, c3, c2, c1), strict=True):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_relu(c_in, c_out)]
        self.body = nn.Sequential(*blocks, nn.Conv2d(c1, out_chans, 1), nn.Sigmoid())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features [n, C5] -> images [n, out_chans, img_size, img_size]."""
        return self.body(self.linear(features).view(len(features), -1, self.start, self.start))


def check_decodable(images: torch.Tensor, decoder: ImageDecoder | None) -> ImageDecoder:
    """The decoder, after checking there is one and that it reconstructs ``images``' size."""
    if decoder is None:
        raise ValueError("this model has no decoder: build it with img_size=<the data size> "
                         "(+model.params.img_size=64)")
    side = decoder.img_size
    if tuple(images.shape[-2:]) != (side, side):
        raise ValueError(f"the decoder reconstructs {side}-px images, got "
                         f"{tuple(images.shape[-2:])}: set model.params.img_size to the data size")
    return decoder


class ContrastiveCNN(nn.Module):
    """Five-stage CNN encoder + projection head: ``model(images) -> projections [B, P]``.

    Args:
        in_chans: input channels (1: grayscale X-rays).
        width: multiplier of the stage channels 64/128/256/512/512 (rounded, at least 1).
        proj_hidden: hidden width of the projection head (None: the feature width).
        proj_dim: output width of the projection head (the guide's 256).
        regions: regional attention heads (option 2: 6; 0 = none).
        img_size: the side a decoder reconstructs (the reconstruction control; 0 = none).
    """

    def __init__(self, in_chans: int = 1, width: float = 1.0, proj_hidden: int | None = None,
                 proj_dim: int = 256, regions: int = 0, img_size: int = 0) -> None:
        super().__init__()
        if width <= 0 or proj_dim < 1:
            raise ValueError(f"ContrastiveCNN needs width > 0 and proj_dim >= 1, got "
                             f"width={width!r}, proj_dim={proj_dim!r}")
        channels = [max(1, round(c * width)) for c in STAGE_CHANNELS]
        stages: list[nn.Module] = []
        c_in = in_chans
        for c_out in channels[:4]:
            stages.append(nn.Sequential(*_conv_bn_relu(c_in, c_out, stride=2),
                                        *_conv_bn_relu(c_out, c_out)))
            c_in = c_out
        stages.append(nn.Sequential(*_conv_bn_relu(c_in, channels[4]),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.stages = nn.Sequential(*stages)
        self.channels = tuple(channels)
        self.embed_dim = channels[4]
        hidden = proj_hidden or self.embed_dim
        self.projection = nn.Sequential(nn.Linear(self.embed_dim, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, proj_dim))
        self.proj_dim = proj_dim
        self.regions = int(regions)
        self.region_attention = (nn.Conv2d(self.embed_dim, self.regions, 1) if self.regions
                                 else None)
        self.decoder = ImageDecoder(self.channels, in_chans, img_size) if img_size else None

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Stage 5's feature map [B, embed_dim, h, w] (before the global pooling)."""
        return self.stages[4][:3](self.stages[:4](images))

    def region_features(self, features: torch.Tensor, region_masks: torch.Tensor
                        ) -> torch.Tensor:
        """Attention-pooled features [B, R, embed_dim] of a stage-5 feature map
        (:meth:`feature_map`) over region masks [B, R, H, W] of the input."""
        if self.region_attention is None:
            raise ValueError("this ContrastiveCNN has no regional attention: build it with "
                             "regions=6 (model.params.regions=6)")
        if region_masks.ndim != 4 or region_masks.shape[1] != self.regions:
            raise ValueError(f"region masks must be [B, {self.regions}, H, W], got "
                             f"{tuple(region_masks.shape)}")
        coverage = F.interpolate(region_masks.float(), size=features.shape[-2:], mode="area")
        logits = self.region_attention(features) + coverage.clamp_min(1e-6).log()
        attention = torch.softmax(logits.flatten(2), dim=2)  # [B, R, hw]
        return torch.einsum("brp,bcp->brc", attention, features.flatten(2))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> features [B, embed_dim] (stage 5 after global pooling)."""
        if images.ndim != 4:
            raise ValueError(f"ContrastiveCNN.encode takes images [B, C, H, W], got shape "
                             f"{tuple(images.shape)}")
        return self.stages(images)

    def forward(self, images: torch.Tensor, region_masks: torch.Tensor | None = None,
                reconstruct: int = 0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images [B, C, H, W] -> projections [B, proj_dim] (the NT-Xent input); with region
        masks [B, R, H, W] also the regional projections [B, R, proj_dim]; with
        ``reconstruct`` = n > 0 also the decoder's images of the first n inputs."""
        if reconstruct:
            if region_masks is not None:
                raise ValueError("ContrastiveCNN reconstructs or pools regions, not both")
            decoder = check_decodable(images, self.decoder)
            features = self.encode(images)
            return self.projection(features), decoder(features[:reconstruct])
        if region_masks is None:
            return self.projection(self.encode(images))
        features = self.feature_map(images)
        pooled = self.stages[4][3:](features)  # = encode(images)
        regional = self.projection(self.region_features(features, region_masks))
        return self.projection(pooled), regional

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters ``encode`` does not use (the projection head, the regional attention, the
        decoder): frozen in fine-tuning."""
        yield from self.projection.parameters()
        for extra in (self.region_attention, self.decoder):
            if extra is not None:
                yield from extra.parameters()


_FULL: dict[str, Any] = {"in_chans": 1, "width": 1.0, "proj_dim": 256}
_TINY: dict[str, Any] = {"in_chans": 1, "width": 0.125, "proj_dim": 32}


@register_model
def contrastive_cnn(**overrides: Any) -> ContrastiveCNN:
    """The guide's 5-stage CNN, 64/128/256/512/512 channels, projection 512 -> 512 -> 256."""
    return build_with_overrides(ContrastiveCNN, "contrastive_cnn", _FULL, overrides)


@register_model
def contrastive_cnn_tiny(**overrides: Any) -> ContrastiveCNN:
    """CPU-sized: the same five stages at width 1/8 (8/16/32/64/64), projection 64 -> 32."""
    return build_with_overrides(ContrastiveCNN, "contrastive_cnn_tiny", _TINY, overrides)

"""Masked autoencoder ViT built from timm's pieces, the mask given from outside.

Sources: MAE (He et al., ``facebookresearch/mae`` ``models_mae.py``) for the asymmetric design:
the encoder runs on the visible patches only, a lighter decoder takes the encoder output plus
mask tokens put back at their positions, a linear projection predicts each patch's pixels, the
loss covers the masked patches only (optionally against per-patch normalized targets,
``norm_pix_loss``). RGMIM (Li et al.) for the sizes (ViT-Base encoder, L=8 / D=512 / 16-head
decoder, 224 px, T=16, grayscale), the learnable 1-D position embeddings (Sec. 3.2), the
encoder output ``y = GAP(LN(z_L))`` (eq. 4) and the loss ``||Y_M - X_M||^2 / (m T^2 C)``
(eq. 5, see :func:`medmask.models.masked_mean_loss`).

Module names follow timm's ``VisionTransformer`` (``patch_embed``, ``cls_token``, ``pos_embed``,
``blocks``, ``norm``) so ImageNet ViT weights saved by timm load into the encoder as they are
(the "Transfer" baseline, see :func:`medmask.models.load_local_weights`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed, build_sincos2d_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn import functional as F

from medmask.masking import PatchGrid
from medmask.models._interface import ReconstructionOutput, check_images
from medmask.models._registry import build_with_overrides, register_model

POS_EMBED_TYPES = ("learnable", "sincos")


class MaskedAutoencoderViT(nn.Module):
    """MAE with a visible-only ViT encoder and a light ViT decoder; the mask is an input.

    Args:
        img_size: square image side H = W.
        patch_size: square patch side T (N = (H / T)^2 patches).
        in_chans: C (1 = grayscale, as RGMIM).
        embed_dim, depth, num_heads: encoder D, L and heads (ViT-Base: 768, 12, 12).
        mlp_ratio: MLP hidden width / D (ViT-Base: 3072 / 768 = 4).
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder D, L and heads
            (RGMIM: 512, 8, 16).
        pos_embed: ``"learnable"`` 1-D position embeddings (RGMIM) or MAE's fixed 2-D
            ``"sincos"``.
        norm_pix_loss: predict per-patch normalized pixels (MAE's option).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 1,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        pos_embed: str = "learnable",
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        _check_config(img_size, patch_size, embed_dim, num_heads, decoder_embed_dim,
                      decoder_num_heads, pos_embed)
        self.grid = PatchGrid(img_size, img_size, patch_size=patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.pos_embed_type = pos_embed
        self.norm_pix_loss = norm_pix_loss
        num_patches = self.grid.num_patches
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        block = partial(Block, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm_layer)

        # Encoder (timm VisionTransformer names).
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(*[block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = norm_layer(embed_dim)

        # Decoder.
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim))
        self.decoder_blocks = nn.Sequential(
            *[block(decoder_embed_dim, decoder_num_heads) for _ in range(decoder_depth)]
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)
        self._init_weights()

    # ----------------------------------------------------------------------------- init
    def _init_weights(self) -> None:
        """MAE's initialization; sin-cos tables are fixed (no gradient)."""
        for table in (self.pos_embed, self.decoder_pos_embed):
            if self.pos_embed_type == "sincos":
                table.data.copy_(_sincos_table(self.grid, table.shape[-1]))
                table.requires_grad_(False)
            else:
                trunc_normal_(table, std=0.02)
        proj = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.data.view(proj.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------ patches
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, T*T*C] (row-major patches, pixels in (row, col, channel))."""
        b, c, _, _ = images.shape
        t, rows, cols = self.grid.patch_h, self.grid.rows, self.grid.cols
        x = images.reshape(b, c, rows, t, cols, t)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(b, rows * cols, t * t * c)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, N, T*T*C] -> [B, C, H, W], the inverse of :meth:`patchify`."""
        b = patches.shape[0]
        t, rows, cols, c = self.grid.patch_h, self.grid.rows, self.grid.cols, self.in_chans
        x = patches.reshape(b, rows, cols, t, t, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, rows * t, cols * t)

    def visible_ids(self, mask: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Indices [B, N_visible] of the visible patches, ascending, from a bool mask [B, N].

        Every row must mask the same count (what lets ``gather`` stack the batch).
        """
        n = self.grid.num_patches
        if mask.shape != (batch_size, n):
            raise ValueError(
                f"mask must be bool [{batch_size}, {n}] for {batch_size} images on {self.grid}, "
                f"got {tuple(mask.shape)}"
            )
        counts = mask.sum(dim=1)
        if bool((counts != counts[0]).any()):
            raise ValueError(
                f"every mask row must hold the same number of True, got counts {counts.tolist()}"
            )
        num_visible = n - int(counts[0])
        if num_visible < 1:
            raise ValueError("the mask hides every patch; the encoder needs at least one visible")
        order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
        return order[:, :num_visible]

    # ------------------------------------------------------------------------ encoder
    def forward_encoder(
        self, images: torch.Tensor, ids_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """LN(z_L) [B, 1 + N_visible, D] (cls first) over the visible patches only.

        ``ids_keep`` None runs all patches (no mask). RGMIM eq. 1-3: z_0 = [x_cls; x_p E] +
        E_pos, then L timm ``Block``s (MSA and MLP with pre-LN and residuals).
        """
        check_images(images, self.grid, self.in_chans)
        b, c, _, _ = images.shape
        t, rows, cols = self.grid.patch_h, self.grid.rows, self.grid.cols
        # The patch embedding's conv (kernel = stride = T) applied as one matrix product to the
        # visible patches only: pixels in the conv weight's (channel, row, col) order.
        patches = images.reshape(b, c, rows, t, cols, t).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, rows * cols, c * t * t)
        pos = self.pos_embed[:, 1:].expand(b, -1, -1)
        if ids_keep is not None:
            patches = torch.gather(patches, 1, ids_keep.unsqueeze(-1).expand(-1, -1, c * t * t))
            pos = torch.gather(pos, 1, ids_keep.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))
        proj = self.patch_embed.proj
        x = self.patch_embed.norm(F.linear(patches, proj.weight.flatten(1), proj.bias)) + pos
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = self.blocks(torch.cat([cls, x], dim=1))
        return self.norm(x)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """y = GAP(LN(z_L)) over all patch tokens (RGMIM eq. 4): [B, C, H, W] -> [B, D]."""
        return self.forward_encoder(images)[:, 1:].mean(dim=1)

    # ------------------------------------------------------------------------ decoder
    def forward_decoder(self, latent: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encoder output + mask tokens at the hidden positions -> pixels [B, N, T*T*C]."""
        x = self.decoder_embed(latent)
        b, _, d = x.shape
        # under bf16 autocast the embedded tokens are bf16 and the mask token a float32
        # parameter: scatter needs one dtype
        full = self.mask_token.to(x.dtype).expand(b, self.grid.num_patches, d)
        full = torch.scatter(full, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, 1:])

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Parameters that :meth:`encode` never uses (frozen by the classifier for DDP)."""
        modules = (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred)
        return [self.mask_token, self.decoder_pos_embed] + [
            p for m in modules for p in m.parameters()
        ]

    # ------------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> ReconstructionOutput:
        """Reconstruct ``images`` [B, C, H, W] from the patches ``mask`` [B, N] leaves visible.

        Returns:
            :class:`ReconstructionOutput`: the reconstructed image (with ``norm_pix_loss`` the
            prediction is mapped back with each patch's true mean/std, for display) and the
            per-patch MSE [B, N] over every patch.
        """
        ids_keep = self.visible_ids(mask, images.shape[0])
        predicted = self.forward_decoder(self.forward_encoder(images, ids_keep), ids_keep)
        target = self.patchify(images)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
            patch_loss = (predicted - (target - mean) / std).pow(2).mean(dim=-1)
            predicted = predicted * std + mean
        else:
            patch_loss = (predicted - target).pow(2).mean(dim=-1)
        return ReconstructionOutput(self.unpatchify(predicted), patch_loss)


def _sincos_table(grid: PatchGrid, dim: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position table [1, 1 + N, dim] (zeros for the cls token)."""
    table = build_sincos2d_pos_embed([grid.rows, grid.cols], dim=dim)
    return torch.cat([torch.zeros(1, dim), table], dim=0).unsqueeze(0)


def _check_config(img_size: int, patch_size: int, embed_dim: int, num_heads: int,
                  decoder_embed_dim: int, decoder_num_heads: int, pos_embed: str) -> None:
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
    if pos_embed not in POS_EMBED_TYPES:
        raise ValueError(f"pos_embed must be one of {POS_EMBED_TYPES}, got {pos_embed!r}")
    for dim, heads, what in ((embed_dim, num_heads, "embed_dim"),
                             (decoder_embed_dim, decoder_num_heads, "decoder_embed_dim")):
        if dim % heads:
            raise ValueError(f"{what} {dim} must be divisible by its {heads} heads")
        if pos_embed == "sincos" and dim % 4:
            raise ValueError(f"sincos position embeddings need {what} % 4 == 0, got {dim}")


# ---------------------------------------------------------------------------- registry
@register_model
def mae_vit_tiny_64(**overrides: Any) -> MaskedAutoencoderViT:
    """CPU-sized MAE: 64 px, patch 8 (64 patches), D=128 x 4 blocks, decoder D=64 x 2."""
    defaults = dict(img_size=64, patch_size=8, in_chans=1, embed_dim=128, depth=4, num_heads=4,
                    decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4)
    return build_with_overrides(MaskedAutoencoderViT, "mae_vit_tiny_64", defaults, overrides)


@register_model
def mae_vit_small_224(**overrides: Any) -> MaskedAutoencoderViT:
    """ViT-S/16 encoder (D=384, L=12, 6 heads) with a D=256 x 4 decoder, 224 px grayscale."""
    defaults = dict(img_size=224, patch_size=16, in_chans=1, embed_dim=384, depth=12,
                    num_heads=6, decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8)
    return build_with_overrides(MaskedAutoencoderViT, "mae_vit_small_224", defaults, overrides)


@register_model
def mae_vit_base_224(**overrides: Any) -> MaskedAutoencoderViT:
    """RGMIM paper (Sec. 4.1, Table 1): ViT-Base encoder (L=12, D=768, 12 heads, MLP 3072),
    decoder L=8, D=512, 16 heads; 224 px, patch 16, grayscale."""
    defaults = dict(img_size=224, patch_size=16, in_chans=1, embed_dim=768, depth=12,
                    num_heads=12, mlp_ratio=4.0, decoder_embed_dim=512, decoder_depth=8,
                    decoder_num_heads=16)
    return build_with_overrides(MaskedAutoencoderViT, "mae_vit_base_224", defaults, overrides)

"""Models: MAE ViT built from timm blocks, U-Net, classification heads.

Public API:

- The model interface (:mod:`._interface`): every pretraining model is called as
  ``model(images, mask) -> ReconstructionOutput(prediction, patch_loss)`` with the per-patch
  loss [B, N] for every patch, has a ``grid`` and ``encode(images) -> [B, D]``; the training
  loss is :func:`masked_mean_loss` (RGMIM eq. 5).
- :class:`MaskedAutoencoderViT` (``mae_vit_tiny_64``, ``mae_vit_small_224``,
  ``mae_vit_base_224``), :class:`UNet` (``unet_tiny``, ``unet``), :class:`UNetSegmenter`
  (``unet_tiny_seg``, ``unet_seg``, :func:`from_pretrained_unet`).
- :class:`ContrastiveCNN` (``contrastive_cnn``, ``contrastive_cnn_tiny``): the guide's 5-stage
  CNN with a SimCLR projection head, for the contrastive methods; :class:`SegAttentionCNN`
  (``seg_attention_cnn``, ``seg_attention_cnn_tiny``): the same stages with option 5's spatial
  attention, segmentation branch, score-conditioned head and decoder.
- :class:`CLIPEncoder` (``clip_local``, :func:`load_clip`): an open_clip model (BiomedCLIP)
  from a local folder, ``encode(images)`` and ``encode_text(texts)``; open_clip is imported
  only when one is loaded.
- :class:`EncoderClassifier` (uses only ``encode``), :class:`TimmEncoder` (``resnet50``),
  :func:`load_local_weights`.
- The registry: :func:`create_model`, :func:`list_models`, :func:`register_model`.
- Batch inputs: :func:`images_nchw`, :func:`autocast` (bf16 on CUDA, a no-op on the CPU unless
  ``"bf16"``), :func:`use_channels_last` (channels-last parameters on CUDA).
"""

from medmask.models import (  # noqa: F401  (fill the registry)
    _classifier,
    _clip,
    _contrastive,
    _mae,
    _seg_attention,
    _unet,
)
from medmask.models._batch import BF16_EVERYWHERE, autocast, images_nchw, use_channels_last
from medmask.models._classifier import (
    EncoderClassifier,
    LoadReport,
    TimmEncoder,
    load_local_weights,
    set_drop_path,
)
from medmask.models._clip import CLIPEncoder, check_clip_folder, load_clip
from medmask.models._contrastive import ContrastiveCNN
from medmask.models._interface import (
    Encoder,
    MaskedReconstructionModel,
    ReconstructionOutput,
    masked_mean_loss,
)
from medmask.models._mae import MaskedAutoencoderViT
from medmask.models._registry import create_model, is_model, list_models, register_model
from medmask.models._seg_attention import SegAttentionCNN, SegAttentionOutput
from medmask.models._unet import UNet, UNetBody, UNetSegmenter, from_pretrained_unet

__all__ = [
    "CLIPEncoder",
    "ContrastiveCNN",
    "Encoder",
    "EncoderClassifier",
    "LoadReport",
    "MaskedAutoencoderViT",
    "MaskedReconstructionModel",
    "ReconstructionOutput",
    "SegAttentionCNN",
    "SegAttentionOutput",
    "TimmEncoder",
    "UNet",
    "UNetBody",
    "UNetSegmenter",
    "BF16_EVERYWHERE",
    "autocast",
    "check_clip_folder",
    "create_model",
    "from_pretrained_unet",
    "images_nchw",
    "use_channels_last",
    "is_model",
    "list_models",
    "load_clip",
    "load_local_weights",
    "masked_mean_loss",
    "register_model",
    "set_drop_path",
]

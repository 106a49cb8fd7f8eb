"""A CLIP model (open_clip) loaded from a local folder, exposed as an :class:`Encoder`.

Source: Anatomical Masking as Lightweight Visual Priors (Sec. 3.3, 4.3): BiomedCLIP (a ViT-B/16
image tower and a PubMedBERT text tower, 224 px) through OpenCLIP. Nothing is downloaded: the
folder holds ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``), the CLIP weights
(``open_clip_pytorch_model.bin`` or another name open_clip looks for) and, for a Hugging Face
text tower, its ``config.json`` and tokenizer files, with ``text_cfg.hf_model_name`` and
``hf_tokenizer_name`` pointing at that folder; the text tower is built from its config
(``pretrained_text=False``) and takes its weights from the CLIP checkpoint.

open_clip's ``local-dir:`` only logs a warning and builds random weights when the weights file
is missing; :func:`load_clip` checks first and fails naming the file it expected. open_clip and
transformers are imported only when a CLIP is loaded (``# defer: open_clip``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medmask.models._registry import register_model

CONFIG_FILE = "open_clip_config.json"
# The names open_clip's local-dir loader looks for, in its order of preference.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
                "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
# The files a Hugging Face text tower needs in its folder (config and a WordPiece tokenizer).
TEXT_TOWER_FILES = ("config.json", "tokenizer_config.json")


class CLIPEncoder(nn.Module):
    """An open_clip model with ``encode(images) -> [B, D]`` and ``encode_text(texts)``.

    Images are [B, C, H, W] in [0, 1] (C = 1 is repeated to RGB), resized (bicubic) to the
    model's image size and standardized with its preprocessing mean and std (the folder's
    ``preprocess_cfg``; BiomedCLIP's are the OpenAI CLIP statistics). Features are not
    normalized (``normalize=True`` gives unit vectors, as CLIP's similarity uses).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, image_size: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)[:, None, None])
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)[:, None, None])
        probe = model.visual.proj if getattr(model.visual, "proj", None) is not None else None
        self.embed_dim = int(probe.shape[1]) if probe is not None else int(
            model.text_projection.shape[1] if isinstance(model.text_projection, torch.Tensor)
            else model.visual.output_dim)

    def with_statistics(self, mean: Sequence[float], std: Sequence[float]) -> CLIPEncoder:
        """The same model (shared, not copied) standardizing with other channel statistics
        (e.g. ImageNet's, as the contour-overlay paper preprocesses)."""
        return CLIPEncoder(self.model, self.tokenizer, self.image_size, mean,
                           std).to(self.mean.device)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] in [0, 1] -> the model's standardized RGB input."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [B, 1 or 3, H, W] in [0, 1], got "
                             f"{tuple(images.shape)}")
        x = images.float().expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.float()
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                              align_corners=False).clamp(0, 1)
        return (x - self.mean) / self.std

    def encode(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Images [B, C, H, W] in [0, 1] -> image features [B, D]."""
        return self.model.encode_image(self.preprocess(images), normalize=normalize)

    def encode_text(self, texts: Sequence[str], normalize: bool = False) -> torch.Tensor:
        """Texts -> text features [T, D] (the folder's tokenizer)."""
        tokens = self.tokenizer(list(texts)).to(self.mean.device)
        return self.model.encode_text(tokens, normalize=normalize)


def check_clip_folder(folder: str | Path) -> tuple[Path, dict[str, Any], Path]:
    """The folder, its parsed ``open_clip_config.json`` and its weights file.

    Raises:
        ValueError: a missing folder, config, weights file or text-tower file, each naming
            what it expected.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"CLIP folder {str(root)!r} does not exist (weights load from local "
                         "folders only)")
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"CLIP folder {str(root)!r} has no {CONFIG_FILE}")
    config = json.loads(config_path.read_text())
    if "model_cfg" not in config:
        raise ValueError(f"{config_path} has no 'model_cfg'")
    weights = [root / name for name in WEIGHT_FILES if (root / name).is_file()]
    if not weights:
        raise ValueError(f"CLIP folder {str(root)!r} has no weights file: expected "
                         f"{WEIGHT_FILES[2]!r} (or one of {list(WEIGHT_FILES)}); open_clip "
                         "would silently build random weights")
    text = config["model_cfg"].get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if key in text:
            tower = Path(text[key])
            tower = tower if tower.is_absolute() else root / tower
            missing = [f for f in TEXT_TOWER_FILES
                       if not (tower / f).is_file()] if key == "hf_model_name" else (
                [] if (tower / "tokenizer_config.json").is_file() else ["tokenizer_config.json"])
            if missing:
                raise ValueError(f"text_cfg.{key} = {text[key]!r}: {str(tower)!r} has no "
                                 f"{missing[0]} (the text tower loads from local files only)")
    return root, config, weights[0]


def load_clip(folder: str | Path, device: str | torch.device = "cpu") -> CLIPEncoder:
    """Load an open_clip model from a local folder (module docstring) as a :class:`CLIPEncoder`.

    Relative ``hf_model_name`` / ``hf_tokenizer_name`` are resolved against the folder; hub
    access is switched off (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) unless set.
    """
    root, config, _ = check_clip_folder(folder)
    root = root.resolve()  # before the chdir below: a relative folder means this directory's
    import open_clip  # defer: open_clip (and transformers, for a Hugging Face text tower)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # open_clip resolves a relative hf_model_name / hf_tokenizer_name (e.g. ".") against the
    # working directory: load from inside the folder so they mean the folder.
    with contextlib.chdir(root):
        model = open_clip.create_model(f"local-dir:{root}", pretrained_text=False,
                                       device=device)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{root}")
    pre = config.get("preprocess_cfg", {})
    vision = config["model_cfg"].get("vision_cfg", {})
    size = pre.get("size", vision.get("image_size", 224))
    size = size[0] if isinstance(size, list | tuple) else size
    mean = pre.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = pre.get("std", open_clip.OPENAI_DATASET_STD)
    return CLIPEncoder(model.eval(), tokenizer, int(size), mean, std).to(device)


@register_model
def clip_local(path: str = "", device: str = "cpu") -> CLIPEncoder:
    """A CLIP (e.g. BiomedCLIP) from a local open_clip folder: ``model.params.path``."""
    if not path:
        raise ValueError("clip_local needs model.params.path: a local open_clip folder")
    return load_clip(path, device)

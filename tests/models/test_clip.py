"""The CLIP wrapper loads an open_clip model from a local folder (nothing downloaded): a tiny
model with a 2-layer, 64-dim BERT text tower saved to tmp loads back tensor for tensor, and a
missing weights or text-tower file fails naming it. (That importing medmask.models loads
neither open_clip nor transformers is tests/test_rooms.py's check.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "chest", "x", "-", "ray",
         "showing", "no", "acute", "findings", "in", "the", "lung", "effusion", "opacity"]
MODEL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
                   "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"hf_model_name": ".", "hf_tokenizer_name": ".", "hf_proj_type": "linear",
                 "hf_pooler_type": "cls_pooler", "context_length": 16},
}
PREPROCESS = {"size": 32, "mean": [0.48145466, 0.4578275, 0.40821073],
              "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic"}


def _tiny_clip_folder(root: Path) -> dict[str, torch.Tensor]:
    """A local open_clip folder: config, BERT config + WordPiece tokenizer, CLIP weights."""
    import open_clip
    from transformers import BertConfig, BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    BertConfig(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=128,
               max_position_embeddings=32).save_pretrained(root)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    text_cfg = {**MODEL_CFG["text_cfg"], "hf_model_name": str(root),
                "hf_tokenizer_name": str(root), "hf_model_pretrained": False}
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(MODEL_CFG["embed_dim"], MODEL_CFG["vision_cfg"], text_cfg)
    state = model.state_dict()
    torch.save(state, root / "open_clip_pytorch_model.bin")
    (root / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS}))
    return state


def test_a_local_clip_loads_the_saved_tensors_and_encodes(tmp_path):
    from medmask.models import create_model, load_clip

    state = _tiny_clip_folder(tmp_path / "clip")
    clip = load_clip(tmp_path / "clip")
    loaded = clip.model.state_dict()
    for key in ("visual.conv1.weight", "text.transformer.encoder.layer.1.output.dense.weight",
                "text.proj.weight"):
        assert torch.equal(loaded[key], state[key]), key
    assert clip.embed_dim == 16
    images = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        features = clip.encode(images)
        texts = clip.encode_text(["a chest x-ray showing effusion", "no acute findings"],
                                 normalize=True)
    assert features.shape == (2, 16) and texts.shape == (2, 16)
    assert torch.allclose(texts.norm(dim=1), torch.ones(2), atol=1e-5)
    same = create_model("clip_local", path=str(tmp_path / "clip"))
    with torch.no_grad():
        assert torch.equal(same.encode(images), features)


def test_missing_files_are_named(tmp_path):
    from medmask.models import load_clip

    _tiny_clip_folder(tmp_path / "clip")
    (tmp_path / "clip" / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match="no weights file: expected 'open_clip_pytorch_model.bin'"):
        load_clip(tmp_path / "clip")
    _tiny_clip_folder(tmp_path / "clip2")
    (tmp_path / "clip2" / "config.json").unlink()
    with pytest.raises(ValueError, match="hf_model_name = '.'.*has no config.json"):
        load_clip(tmp_path / "clip2")
    with pytest.raises(ValueError, match="has no open_clip_config.json"):
        load_clip(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_clip(tmp_path / "nowhere")


def test_a_relative_folder_loads_from_the_working_directory(tmp_path, monkeypatch):
    from medmask.models import load_clip

    state = _tiny_clip_folder(tmp_path / "clip")
    monkeypatch.chdir(tmp_path)
    clip = load_clip("clip")  # open_clip is called from inside the folder: resolved first
    assert torch.equal(clip.model.state_dict()["visual.conv1.weight"],
                       state["visual.conv1.weight"])

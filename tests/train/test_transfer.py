"""The Transfer baseline: the classifier's encoder starts from a local weights file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from medmask.models import create_model
from medmask.train import (
    BaselineSettings,
    ModelSettings,
    TransferSettings,
    build_classifier,
    settings_from_dict,
    transfer_report,
)

MODEL = {"name": "mae_vit_tiny_64",
         "params": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
                    "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}}
HEAD = {"num_classes": 4, "multilabel": False}


def test_encoder_starts_from_the_local_weights_file(tmp_path) -> None:
    torch.manual_seed(1)
    source = create_model(MODEL["name"], **MODEL["params"])
    # timm-style file: a {"state_dict": ...} wrapper and DDP's "module." prefix on every key
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
               tmp_path / "imagenet.pth")
    init = {"weights": str(tmp_path / "imagenet.pth"), "prefix": ""}
    transferred = build_classifier({"model": MODEL, "head": HEAD, "init_weights": init})
    scratch = build_classifier({"model": MODEL, "head": HEAD})
    key = "patch_embed.proj.weight"
    assert torch.equal(transferred.encoder.state_dict()[key], source.state_dict()[key])
    assert not torch.equal(scratch.encoder.state_dict()[key], source.state_dict()[key])
    report = transfer_report(ModelSettings(**MODEL), TransferSettings(**init))
    assert len(report.loaded) == len(source.state_dict()) and not report.mismatched


def test_missing_weights_file_is_named() -> None:
    with pytest.raises(ValueError, match="does not exist"):
        transfer_report(ModelSettings(**MODEL), TransferSettings("/nowhere/imagenet.pth"))


def test_multilabel_head_config_composes() -> None:
    from hydra import compose, initialize_config_dir

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(str(configs), version_base="1.3"):
        cfg = compose("mae", overrides=["head=findings"])
    head = OmegaConf.to_container(cfg.head)
    assert head["multilabel"] is True and head["num_classes"] == len(head["class_names"]) == 5


def test_baselines_from_config() -> None:
    from medmask.train import baseline_methods

    def baselines(config: dict) -> list:
        return baseline_methods(settings_from_dict(BaselineSettings, config))

    assert baselines({}) == [("scratch", None)]
    both = baselines({"from_scratch": True, "transfer": {"weights": "/w.pth", "prefix": ""}})
    assert [name for name, _ in both] == ["scratch", "transfer"]
    assert both[1][1] == TransferSettings("/w.pth", "")
    assert baselines({"from_scratch": False, "transfer": {"weights": None}}) == []

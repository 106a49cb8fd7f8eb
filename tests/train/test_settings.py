"""Typed settings: unknown or misspelled keys fail at the door, listing the valid ones."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from medmask.train import MimSettings, OptimizerConfig, settings_from_dict

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from _mim import mim_settings  # noqa: E402


def _compose(name: str, *overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def test_the_quick_mae_config_becomes_frozen_typed_settings():
    settings = mim_settings(_compose("mae"))
    assert settings.method == "mae" and settings.masking.name == "random"
    assert isinstance(settings.pretrain.optim, OptimizerConfig)
    assert settings.pretrain.optim.betas == (0.9, 0.95) and settings.fractions == (0.1, 1.0)
    assert settings.model.params["patch_size"] == 4 and settings.scaling.num_workers == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1  # type: ignore[misc]
    rgmim = mim_settings(_compose("rgmim"))
    assert (rgmim.method, rgmim.masking.name) == ("rgmim", "rgmim")


def test_a_misspelled_key_names_itself_and_the_valid_ones():
    cfg = _compose("mae")
    data = dataclasses.asdict(mim_settings(cfg))
    data["pretrain"]["epoch"] = data["pretrain"].pop("epochs")
    with pytest.raises(ValueError, match=r"pretrain: unknown key\(s\) \['epoch'\]; valid keys: "
                                         r"\['batch_size', 'epochs'"):
        settings_from_dict(MimSettings, data)
    data = dataclasses.asdict(mim_settings(cfg))
    data["finetune"]["optim"]["base_lrr"] = 1.0
    with pytest.raises(ValueError, match=r"finetune.optim: unknown key\(s\) \['base_lrr'\]"):
        settings_from_dict(MimSettings, data)
    data = dataclasses.asdict(mim_settings(cfg))
    del data["head"]
    with pytest.raises(ValueError, match="missing key 'head'"):
        settings_from_dict(MimSettings, data)

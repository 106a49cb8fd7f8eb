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


@pytest.mark.parametrize("overrides", [(), ("+experiment=ahm_paper", "data.root=/data/lgg"),
                                       ("+ablation=policy_transfer", "policy.checkpoint=/p.pt")])
def test_every_ahm_config_becomes_typed_settings(overrides):
    from ahm import ahm_settings

    from medmask.train import AhmSettings, PolicySettings

    settings = ahm_settings(_compose("ahm", *overrides), seed=3)
    assert isinstance(settings, AhmSettings) and isinstance(settings.policy, PolicySettings)
    assert settings.seed == 3 and settings.ratio == 0.75
    assert set(settings.segmentation.methods) == {"ahm", "random", "scratch"}
    assert isinstance(settings.segmentation.optim, OptimizerConfig)
    options = settings.policy.appo_options()  # exactly what ahm_appo_config takes
    assert "budget" not in options and "checkpoint" not in options
    import inspect

    from medmask.rl import ahm_appo_config

    assert set(options) <= set(inspect.signature(ahm_appo_config).parameters)


def test_a_misspelled_ahm_key_fails_before_ray_starts():
    from ahm import ahm_settings

    with pytest.raises(ValueError, match=r"policy: unknown key\(s\) \['random_shar'\]"):
        ahm_settings(_compose("ahm", "+policy.random_shar=0.2"))
    with pytest.raises(ValueError, match=r"policy.budget: unknown key\(s\) \['max_update'\]"):
        ahm_settings(_compose("ahm", "+policy.budget.max_update=3"))


def test_bf16_everywhere_survives_the_typed_settings():
    settings = mim_settings(_compose("mae", "train.pretrain.mixed_precision=bf16",
                                     "train.finetune.mixed_precision=false"))
    assert settings.pretrain.mixed_precision == "bf16"  # not True: "bf16" also runs on a CPU
    assert settings.finetune.mixed_precision is False
    assert settings.finetuning().finetune.mixed_precision is False
    with pytest.raises(ValueError, match="mixed_precision must be true, false or 'bf16'"):
        mim_settings(_compose("mae", "train.pretrain.mixed_precision=fp16"))

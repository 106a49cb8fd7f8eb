"""The experiment configs compose: quick defaults, the papers' settings and the ablations."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _compose(name: str, overrides: list[str]) -> dict:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def test_ahm_quick_default_model_follows_the_data_size() -> None:
    cfg = _compose("ahm", ["data.size=32"])
    assert cfg["model"]["params"] == {"img_size": 32, "patch_size": 8}
    assert cfg["policy"]["random_share"] == 0.3 and cfg["masking"]["ratio"] == 0.75
    assert set(cfg["segmentation"]["methods"]) == {"ahm", "random", "scratch"}
    assert cfg["data"]["variant"] == "classic"  # the phantom the AHM quick default is tuned on
    assert cfg["verbose"] is False and cfg["policy"]["credit"] == "myopic"
    assert "weighting" not in cfg["policy"]


def test_ahm_rejects_an_unknown_phantom_variant_before_compute() -> None:
    from medmask.train._ahm_study import check_phantom_variant

    check_phantom_variant({"name": "phantom", "variant": "classic"})
    check_phantom_variant({"name": "lgg_slices", "variant": "cluttered"})  # not a phantom
    with pytest.raises(ValueError, match=r"valid phantom variants are \['benchmark', 'classic'"):
        check_phantom_variant({"name": "phantom", "variant": "cluttered"})
    assert _compose("ahm", [])["data"]["variant"] == "classic"


def test_ahm_paper_setting() -> None:
    cfg = _compose("ahm", ["+experiment=ahm_paper", "data.root=/data/lgg"])
    assert cfg["data"]["name"] == "lgg_slices" and cfg["model"]["name"] == "unet"
    assert cfg["model"]["params"] == {"img_size": 256, "patch_size": 16}  # 256 patches
    assert cfg["train"]["pretrain"]["optim"]["base_lr"] == 2e-4
    assert cfg["train"]["pretrain"]["batch_size"] == 12
    seg = cfg["train"]["segmentation"]
    assert (seg["optim"]["base_lr"], seg["optim"]["decay_every_epochs"],
            seg["optim"]["decay_factor"], seg["batch_size"]) == (3e-4, 3, 0.9, 4)
    policy = cfg["policy"]
    assert (policy["lr"], policy["lr_decay"], policy["lr_decay_every_epochs"],
            policy["train_batch_size"], policy["budget"]["max_epochs"]) == (3e-4, 0.9, 25, 4, 200)
    assert cfg["segmentation"]["fractions"] == [0.05, 0.1, 0.5, 1.0]


def test_rgmim_paper_setting() -> None:
    cfg = _compose("rgmim", ["+experiment=rgmim_paper", "data.root=/data/covid"])
    assert cfg["data"]["name"] == "covid_radiography" and cfg["data"]["size"] == 224
    assert cfg["model"]["name"] == "mae_vit_base_224" and cfg["masking"]["name"] == "rgmim"
    assert (cfg["train"]["pretrain"]["epochs"], cfg["train"]["finetune"]["epochs"],
            cfg["train"]["pretrain"]["batch_size"]) == (40, 30, 256)
    assert cfg["fractions"] == [0.01, 0.05, 0.1, 0.5, 1.0]


@pytest.mark.parametrize("ablation", ["random_share", "masking_ratio", "patch_size"])
def test_ahm_ablations_are_multiruns(ablation: str) -> None:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("ahm", overrides=[f"+ablation={ablation}"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert len(cfg.hydra.sweeper.params) == 1


def test_torch_threads_give_each_worker_its_share_of_the_cores(monkeypatch) -> None:
    import sys

    sys.path.insert(0, str(CONFIGS.parent / "experiments"))
    from _common import scaling_settings
    from _mim import mim_settings
    from sweep import shared_threads

    from medmask.train import ScalingSettings

    cfg = OmegaConf.create(_compose("mae", []))
    cluster = cfg.cluster
    assert cluster.torch_threads == "auto"
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1, 2, 3})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert scaling_settings(cluster)["torch_threads"] == 4
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a `ray job submit` job: the cluster's
    assert scaling_settings(cluster)["torch_threads"] is None
    monkeypatch.delenv("RAY_ADDRESS")
    settings = mim_settings(cfg)
    assert settings.scaling.torch_threads == 4
    assert shared_threads(settings, 2).scaling.torch_threads == 2  # two trials at once
    assert shared_threads(settings, 8).scaling.torch_threads == 1
    cluster.num_workers = 3
    assert scaling_settings(cluster)["torch_threads"] == 1
    cluster.num_workers, cluster.num_cpus = 1, 2
    assert scaling_settings(cluster)["torch_threads"] == 2
    cluster.address = "auto"  # an existing cluster: Ray's default
    assert scaling_settings(cluster)["torch_threads"] is None
    cluster.torch_threads = 0
    with pytest.raises(ValueError, match="torch_threads"):
        scaling_settings(cluster)
    with pytest.raises(ValueError, match="torch_threads"):
        ScalingSettings(torch_threads=0)

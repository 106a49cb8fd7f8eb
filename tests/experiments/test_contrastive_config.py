"""experiments/contrastive.py: every contrastive method composes into typed settings (no Ray)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from medmask.train import CropSettings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import _mim  # noqa: E402


def _settings(*overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return _mim.mim_settings(compose("contrastive", overrides=list(overrides)))


def test_contrastive_defaults_to_simclr_on_the_tiny_cnn_with_findings():
    settings = _settings()
    assert settings.method == "simclr" and settings.method_params == {"temperature": 0.1}
    assert settings.model.name == "contrastive_cnn_tiny"
    assert settings.head.multilabel and settings.head.num_classes == 5
    assert settings.crop is None and settings.pretraining().method_params["temperature"] == 0.1


@pytest.mark.parametrize("method, weight", [("masked_contrastive", 0.3),
                                            ("pathology_aware", 0.3)])
def test_weighted_methods_carry_their_weight(method, weight):
    settings = _settings(f"method={method}", "method.params.weight=0.5")
    assert settings.method == method and settings.method_params["weight"] == 0.5
    assert _settings(f"method={method}").method_params["weight"] == weight


def test_seg_crop_crops_both_stages():
    settings = _settings("method=seg_crop", "model=contrastive")
    assert settings.crop == CropSettings(padding=20, min_crop_ratio=0.5)
    assert settings.pretraining().crop == settings.finetuning().crop == settings.crop
    assert settings.model.name == "contrastive_cnn"


def test_mim_configs_keep_no_method_params():
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        settings = _mim.mim_settings(compose("mae"))
    assert settings.method == "mae" and settings.method_params == {} and settings.crop is None


def test_option_5_and_its_control_compose_with_their_models():
    settings = _settings("method=seg_attention", "model=seg_attention_tiny")
    assert settings.method == "seg_attention" and settings.model.name == "seg_attention_cnn_tiny"
    assert settings.method_params["consistency"] == "warped"
    assert settings.method_params["lung_bce_weight"] == 0.0
    assert settings.model.params["img_size"] == settings.data["size"]
    recon = _settings("method=simclr_recon", "model=contrastive_recon_tiny")
    assert recon.method_params == {"temperature": 0.1, "reconstruction_weight": 0.5}
    assert recon.model.params["img_size"] == recon.data["size"]
    assert settings.probe.every == 1  # the convergence probe is on for the contrastive study

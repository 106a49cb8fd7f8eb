"""experiments/sweep.py: the ready sweep configs compose, validate and fail fast (no Ray)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from medmask.tracking import TrackingUnavailableError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import sweep as sweep_experiment  # noqa: E402


def _compose(*overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("sweep", overrides=list(overrides))


def test_masking_ratio_is_the_quick_grid_and_table3_one_override_away():
    settings, spec = sweep_experiment.sweep_settings(_compose())
    assert spec.name == "masking_ratio" and spec.search == "grid"
    assert dict(spec.space) == {"strategy": ["random", "rgmim"], "ratio": [0.3, 0.6, 0.9],
                                "seed": [0]}
    assert settings.fractions == (1.0,) and settings.modes == ("full",)
    assert _compose("sweep=masking_ratio").tracking.experiment == "sweep-masking_ratio"
    _, full = sweep_experiment.sweep_settings(
        _compose("sweep.space.ratio=[0.15,0.3,0.45,0.6,0.75,0.9]"))
    assert full.space["ratio"] == [0.15, 0.3, 0.45, 0.6, 0.75, 0.9]


def test_label_fraction_sweeps_fractions():
    settings, spec = sweep_experiment.sweep_settings(_compose("sweep=label_fraction"))
    assert spec.x == "fraction" and spec.space["fraction"] == [0.1, 0.5, 1.0]


def test_ahm_share_one_policy_takes_a_given_policy_or_trains_one(tmp_path):
    policy = tmp_path / "policy.pt"
    _, spec = sweep_experiment.sweep_settings(_compose(
        "sweep=ahm_share_one_policy", f"sweep.strategies.ahm.policy_checkpoint={policy}"))
    assert spec.x == "random_share" and spec.space["random_share"][0] == 0.0
    cfg = _compose("sweep=ahm_share_one_policy")  # no checkpoint: the sweep trains one
    settings, spec = sweep_experiment.sweep_settings(cfg)
    from medmask.tune import policy_reconstructions

    assert len(policy_reconstructions(settings, spec)) == 1  # one policy for every p
    assert sweep_experiment.policy_settings(cfg).random_share == 0.3
    cfg.policy = None  # without policy settings an AHM trial still needs a checkpoint
    with pytest.raises(ValueError, match="policy_checkpoint"):
        sweep_experiment.sweep_settings(cfg)


def test_unreachable_server_fails_before_ray_starts(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def no_ray(_cluster):
        raise AssertionError("Ray was started although the tracking server is down")

    monkeypatch.setattr(sweep_experiment, "init_ray", no_ray)
    cfg = _compose("tracking=server", f"tracking.uri=http://127.0.0.1:{port}")
    with pytest.raises(TrackingUnavailableError, match=str(port)):  # before init_ray
        sweep_experiment.run(cfg)


def test_seg_guided_ssl_resolves_every_arm_with_one_pretraining_budget():
    from medmask.models import create_model
    from medmask.tune import trial_settings

    settings, spec = sweep_experiment.sweep_settings(_compose("sweep=seg_guided_ssl"))
    assert spec.plot == "bars" and spec.smoke and spec.probe_every == 1
    assert settings.head.multilabel and settings.head.num_classes == 5  # the findings
    # one trial per arm x seed fine-tunes in both modes (one Ray Train run)
    assert spec.space["seed"] == [0, 1, 2] and "mode" not in spec.space
    assert spec.modes == ("linear_probe", "full")
    arms = {arm: trial_settings(settings, {"method": arm}, spec.strategies, spec.methods)
            for arm in spec.space["method"]}
    scratch = ("scratch", "mae_scratch")
    assert {a.pretrain for name, a in arms.items() if name not in scratch} == {settings.pretrain}
    assert arms["scratch"].pretrain.epochs == 0 and arms["mae"].model.name == "mae_vit_tiny_64"
    # From Scratch of the MAE row: its own backbone (the MIM ViT) untrained, same recipe
    assert arms["mae_scratch"].pretrain.epochs == 0 and arms["mae_scratch"].model == arms[
        "mae"].model and arms["scratch"].model.name == "contrastive_cnn_tiny"
    assert arms["seg_crop"].crop is not None and arms["seg_attention"].method_params[
        "consistency"] == "warped"
    for arm in ("simclr_recon", "seg_attention", "multi_region"):  # the arms' models build
        create_model(arms[arm].model.name, **arms[arm].model.params)
    assert arms["seg_attention"].model.params["img_size"] == settings.data["size"]


def test_grounding_sweeps_random_rgmim_and_ahm_at_three_seeds_a_policy_per_seed(tmp_path):
    from medmask.tune import policy_reconstructions

    cfg = _compose("sweep=grounding")
    settings, spec = sweep_experiment.sweep_settings(cfg)
    assert spec.trial == "grounding" and spec.metric == "grounding_score"
    assert dict(spec.space) == {"strategy": ["random", "rgmim", "ahm"], "seed": [0, 1, 2]}
    needed = policy_reconstructions(settings, spec)  # trained before the trials
    assert sorted(r.seed for r in needed.values()) == [0, 1, 2]
    assert {r.masking.name for r in needed.values()} == {"random"}
    assert all(r.model == settings.model for r in needed.values())  # the quick MIM ViT
    assert sweep_experiment.policy_settings(cfg).budget.time_budget_s <= 300
    with pytest.raises(ValueError, match="must list its values"):  # no points to train for
        sweep_experiment.sweep_settings(_compose(
            "sweep=grounding", "sweep.search=random", "~sweep.space.seed",
            "+sweep.space.ratio={low:0.5,high:0.8}"))
    assert spec.grounding["eval"]["seeds"] == [0, 1, 2, 3]
    assert spec.grounding["finetune"]["epochs"] == 20
    assert settings.data["variant"] == "classic" and settings.data["n_test"] == 256
    _, masking = sweep_experiment.sweep_settings(_compose())
    assert masking.trial == "mim" and masking.metric == "accuracy"

"""Sweep specs, Tune search spaces, trial settings and names (no Ray cluster needed)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from ray import tune

from medmask.tune import (
    SchedulerSpec,
    SweepSpec,
    auto_max_concurrent_trials,
    build_scheduler,
    grid_points,
    param_space,
    trial_name,
    trial_settings,
    trial_values,
    validate_sweep,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import STRATEGIES, tiny_settings  # noqa: E402

from medmask.train import MimSettings, ScalingSettings  # noqa: E402

AHM = {"ahm": {"random_share": 0.3, "policy_checkpoint": "/policies/p.pt"}}


def test_trial_settings_apply_each_parameter(tmp_path):
    base = tiny_settings(tmp_path)
    params = {"strategy": "rgmim", "ratio": 0.45, "fraction": 0.1, "seed": 2, "patch_size": 4,
              "mode": "linear_probe"}
    settings = trial_settings(base, params, STRATEGIES)
    assert dataclasses.asdict(settings.masking) == {"name": "rgmim", "ratio": 0.45,
                                   "params": {"valid_labels": [1, 2], "min_overlap": 0.0}}
    assert settings.fractions == (0.1,) and settings.modes == ("linear_probe",)
    assert settings.seed == 2 and settings.model.params["patch_size"] == 4
    assert base.masking.name == "random" and base.seed == 0  # base untouched
    assert trial_name(settings) == "rgmim-r0.45-frac10-s2"
    assert (trial_name(settings, ["patch_size", "mode"])
            == "rgmim-r0.45-frac10-patch4-mlinear_probe-s2")


def test_ahm_trials_take_random_share_and_need_a_policy(tmp_path):
    base = tiny_settings(tmp_path)
    settings = trial_settings(base, {"strategy": "ahm", "random_share": 0.1, "ratio": 0.6}, AHM)
    assert settings.masking.params == {"random_share": 0.1,
                                             "policy_checkpoint": "/policies/p.pt"}
    assert trial_values(settings)["random_share"] == 0.1
    assert trial_name(settings, ["random_share"]) == "ahm-r0.6-frac100-p0.1-s0"
    with pytest.raises(ValueError, match="policy_checkpoint"):
        trial_settings(base, {"strategy": "ahm"}, {"ahm": {"policy_checkpoint": None}})
    with pytest.raises(ValueError, match="needs a strategy with a random share"):
        trial_settings(base, {"strategy": "random", "random_share": 0.1}, STRATEGIES)


def test_bad_names_list_the_valid_choices(tmp_path):
    base = tiny_settings(tmp_path)
    with pytest.raises(ValueError, match=r"valid: \['fraction', 'method', 'mode', 'patch_size'"):
        trial_settings(base, {"lr": 1.0}, STRATEGIES)
    with pytest.raises(ValueError, match=r"configured strategies: \['random', 'rgmim'\]"):
        trial_settings(base, {"strategy": "gaze"}, STRATEGIES)
    with pytest.raises(ValueError, match="one label fraction"):
        trial_settings(dataclasses.replace(base, fractions=(0.1, 1.0)), {"seed": 0}, STRATEGIES)
    with pytest.raises(ValueError, match="search must be one of"):
        SweepSpec(name="x", space={"seed": [0]}, search="bayes")
    with pytest.raises(ValueError, match="unknown sweep parameter"):
        SweepSpec(name="x", space={"depth": [1, 2]})
    with pytest.raises(ValueError, match="needs search=random"):
        SweepSpec(name="x", space={"ratio": {"low": 0.1, "high": 0.9}})
    with pytest.raises(ValueError, match="non-empty list"):
        SweepSpec(name="x", space={"ratio": 0.5})
    with pytest.raises(ValueError, match="fifo"):
        build_scheduler(SweepSpec(name="x", space={"seed": [0]},
                                  scheduler=SchedulerSpec(name="pbt")))


def test_grid_and_random_param_spaces(tmp_path):
    grid = SweepSpec(name="g", space={"strategy": ["random", "rgmim"], "ratio": [0.3, 0.6, 0.9]},
                     strategies=STRATEGIES)
    space = param_space(grid)
    assert space["ratio"] == tune.grid_search([0.3, 0.6, 0.9])
    assert len(grid_points(grid)) == 6 == validate_sweep(tiny_settings(tmp_path), grid)
    rand = SweepSpec.from_dict({"name": "r", "search": "random", "num_samples": 5,
                                "space": {"strategy": ["random"],
                                          "ratio": {"low": 0.1, "high": 0.9}},
                                "strategies": STRATEGIES})
    space = param_space(rand)
    assert isinstance(space["strategy"], tune.search.sample.Categorical)
    assert isinstance(space["ratio"], tune.search.sample.Float)
    assert rand.num_samples == 5


def test_asha_scheduler_and_concurrency():
    spec = SweepSpec(name="a", space={"seed": [0]},
                     scheduler=SchedulerSpec(name="asha", grace_period=2, max_t=20))
    scheduler = build_scheduler(spec)
    assert type(scheduler).__name__ == "AsyncHyperBandScheduler"
    assert scheduler.metric == "finetune/val/accuracy"
    one_cpu = ScalingSettings(num_workers=1, resources_per_worker={"CPU": 1})
    assert auto_max_concurrent_trials(2, one_cpu) == 2
    four_by_two = ScalingSettings(num_workers=4, resources_per_worker={"CPU": 2})
    assert auto_max_concurrent_trials(16, four_by_two) == 2
    assert auto_max_concurrent_trials(1, ScalingSettings(num_workers=2)) == 1


def test_pretrain_lock_serializes_trials_sharing_a_pretraining(tmp_path):
    import threading
    import time

    from medmask.tune import pretrain_lock

    base = tiny_settings(tmp_path)
    same = trial_settings(base, {"fraction": 0.1}, STRATEGIES)  # only fine-tuning differs
    events: list[str] = []

    def hold(settings: MimSettings, name: str) -> None:
        with pretrain_lock(settings):
            events.append(f"{name}+")
            time.sleep(0.2)
            events.append(f"{name}-")

    threads = [threading.Thread(target=hold, args=(s, n)) for s, n in ((base, "a"), (same, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])


METHOD_ARMS = {
    "simclr": {"model": {"name": "contrastive_cnn_tiny", "params": {}},
               "params": {"temperature": 0.1}},
    "seg_crop": {"model": {"name": "contrastive_cnn_tiny"}, "crop": {"padding": 20}},
    "mae": {"masking": {"name": "random", "ratio": 0.75}},
    "scratch": {"method": "simclr", "model": {"name": "contrastive_cnn_tiny"},
                "pretrain_epochs": 0},
}


def test_method_arms_set_method_model_masking_crop_and_from_scratch(tmp_path):
    base = tiny_settings(tmp_path)
    simclr = trial_settings(base, {"method": "simclr", "mode": "full"}, STRATEGIES, METHOD_ARMS)
    assert simclr.method == "simclr" and simclr.method_params == {"temperature": 0.1}
    assert simclr.model.name == "contrastive_cnn_tiny" and simclr.crop is None
    crop = trial_settings(base, {"method": "seg_crop"}, STRATEGIES, METHOD_ARMS)
    assert crop.crop is not None and crop.crop.padding == 20 and crop.method == "seg_crop"
    mae = trial_settings(base, {"method": "mae"}, STRATEGIES, METHOD_ARMS)
    assert mae.model == base.model and mae.masking.ratio == 0.75 and mae.method == "mae"
    scratch = trial_settings(base, {"method": "scratch", "seed": 1}, STRATEGIES, METHOD_ARMS)
    assert scratch.pretrain.epochs == 0 and scratch.method == "simclr"
    assert trial_values(scratch)["method"] == "scratch" and trial_values(simclr)["method"] == (
        "simclr")
    assert trial_name(scratch, ["method", "seed"]) == "scratch-frac100-s1"
    assert trial_name(simclr, ["method", "mode"]) == "simclr-frac100-mfull-s0"
    with pytest.raises(ValueError, match=r"configured arms: \['mae', 'scratch'"):
        trial_settings(base, {"method": "byol"}, STRATEGIES, METHOD_ARMS)
    with pytest.raises(ValueError, match="unknown key"):
        SweepSpec(name="x", space={"method": ["simclr"]}, methods={"simclr": {"epochs": 0}})


def test_a_trial_fine_tunes_in_every_mode_of_sweep_modes_one_row_each(tmp_path):
    from medmask.tune._trainable import mode_metrics, split_modes

    with pytest.raises(ValueError, match="exclude each other"):
        SweepSpec(name="x", space={"mode": ["full"]}, modes=("full", "linear_probe"))
    spec = SweepSpec.from_dict({"name": "x", "space": {"method": ["mae_scratch"]},
                                "modes": ["linear_probe", "full"], "methods": {
                                    "mae_scratch": {"method": "mae", "pretrain_epochs": 0}}})
    assert spec.modes == ("linear_probe", "full")
    base = dataclasses.replace(tiny_settings(tmp_path), modes=spec.modes)
    settings = trial_settings(base, {"method": "mae_scratch"}, STRATEGIES, spec.methods)
    values = trial_values(settings, "mae_scratch")
    # the arm names the row (not "scratch": the untrained MIM ViT is the MAE row's baseline)
    assert values["method"] == "mae_scratch" and values["backbone"] == "mae_vit_tiny_64"
    assert values["mode"] == "linear_probe+full" and trial_values(settings)["method"] == "scratch"
    assert trial_name(settings, ["method"], "mae_scratch") == "mae_scratch-frac100-s0"
    by_mode = {"linear_probe": {"auc_mean": 0.6, "auc/Edema": 0.5},
               "full": {"auc_mean": 0.8, "auc/Edema": 0.7}}
    flat = mode_metrics(by_mode)
    assert flat["linear_probe/auc_mean"] == 0.6 and flat["full/auc/Edema"] == 0.7
    assert split_modes(flat, spec.modes) == by_mode
    assert mode_metrics({"full": {"auc_mean": 0.8}}) == {"auc_mean": 0.8}  # one mode: as is
    assert split_modes({"auc_mean": 0.8}, ("full",)) == {"full": {"auc_mean": 0.8}}

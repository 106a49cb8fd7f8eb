"""The APPO config builder: the paper's step-decay schedule and the AHM wiring."""

from __future__ import annotations

import pytest

import envs
from medmask.rl import AHMLearner, AHMPolicyModule, ahm_appo_config, step_decay_schedule
from medmask.rl._connector import AddPatchRewardsFromInfos, MarkAutoresetSteps


def _lr_at(schedule: list[list[float]], t: float) -> float:
    """RLlib's piecewise-linear interpolation of a schedule at step t."""
    for (t0, v0), (t1, v1) in zip(schedule, schedule[1:], strict=False):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return schedule[-1][1]


def test_step_decay_drops_by_0_9_every_25_epochs() -> None:
    schedule = step_decay_schedule(3e-4, 0.9, every_steps=25 * 100, max_steps=200 * 100)
    assert schedule[0] == [0, 3e-4]
    assert _lr_at(schedule, 2499) == pytest.approx(3e-4)
    assert _lr_at(schedule, 2500) == pytest.approx(2.7e-4)
    assert _lr_at(schedule, 3700) == pytest.approx(2.7e-4)
    assert _lr_at(schedule, 19999) == pytest.approx(3e-4 * 0.9**7)
    assert _lr_at(schedule, 20000) == pytest.approx(3e-4 * 0.9**8)
    assert len(schedule) == 1 + 2 * 8
    with pytest.raises(ValueError):
        step_decay_schedule(3e-4, 1.5, 10, 100)


def test_config_wires_module_learner_connector_and_vector_env() -> None:
    config = ahm_appo_config(envs.ENV_ID, {"num_images": 8}, num_env_runners=2,
                             num_envs_per_env_runner=3, train_batch_size=4, images_per_epoch=10,
                             random_share=0.5, min_time_s_per_iteration=0.1)
    assert config.learner_class is AHMLearner
    assert config.rl_module_spec.module_class is AHMPolicyModule
    assert config.rl_module_spec.model_config["random_share"] == 0.5
    assert config.gym_env_vectorize_mode == "vector_entry_point"
    assert (config.num_env_runners, config.num_envs_per_env_runner) == (2, 3)
    assert config.num_cpus_per_env_runner == 0.5 and config.num_learners == 0
    assert config.train_batch_size_per_learner == 4
    assert config.min_time_s_per_iteration == 0.1
    assert config.lr[0] == [0, 3e-4] and config.lr[2] == [250, 2.7e-4]
    pieces = config._learner_connector(None, None)
    assert isinstance(pieces[0], AddPatchRewardsFromInfos)
    assert isinstance(config._env_to_module_connector(None, None, None)[0], MarkAutoresetSteps)
    assert not config.normalize_actions and not config.clip_actions  # patch indices as drawn

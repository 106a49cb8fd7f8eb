"""Policy training: iteration metrics that tolerate empty iterations, NaN stops the run, and one
real RLlib run (APPO, 2 EnvRunners) that learns the synthetic moving-square task."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import ray
import torch

import envs
from medmask.masking import ahm_mask, create_mask_strategy, random_mask
from medmask.rl import (
    ENV_STEPS,
    REWARD,
    SPS,
    UPDATES,
    MaskingPolicyNet,
    NonFiniteError,
    PolicyBudget,
    ahm_appo_config,
    iteration_metrics,
    train_policy,
)
from tests.rl.synthetic import (
    SmoothingReconstruction,
    hard_hit_rate,
    moving_square_images,
    position_oracle_masks,
)


def _result(sampled: float | None = 8, lifetime: float | None = 40, reward: float = 0.1,
            **learner: float) -> dict:
    runners = {"num_env_steps_sampled": sampled, "num_env_steps_sampled_lifetime": lifetime,
               "episode_return_mean": reward}
    return {"env_runners": {k: v for k, v in runners.items() if v is not None},
            "learners": {"default_policy": learner}}


def test_iteration_metrics_count_steps_and_rename_learner_keys() -> None:
    metrics, steps = iteration_metrics(_result(8, policy_loss=0.5, vf_loss=0.1), 2.0, 32)
    assert steps == 40 and metrics[ENV_STEPS] == 40 and metrics[SPS] == 4.0
    assert metrics["losses/policy_loss"] == 0.5 and metrics["losses/value_loss"] == 0.1
    assert metrics[REWARD] == 0.1


@pytest.mark.parametrize("sampled", [None, math.nan])
def test_iteration_metrics_fall_back_to_the_lifetime_counter(sampled: float | None) -> None:
    metrics, steps = iteration_metrics(_result(sampled, lifetime=50), 1.0, 32)
    assert steps == 50 and metrics[SPS] == 18.0


def test_iteration_that_sampled_nothing_is_not_an_error() -> None:
    # RLlib 2.60 reported NaN counters in such iterations: int(NaN) crashed the main job.
    result = {"env_runners": {"num_env_steps_sampled": math.nan,
                              "num_env_steps_sampled_lifetime": math.nan}, "learners": {}}
    metrics, steps = iteration_metrics(result, 1.0, 32)
    assert steps == 32 and metrics[SPS] == 0.0 and math.isnan(metrics[REWARD])
    metrics, steps = iteration_metrics({}, 1.0, 0)
    assert steps == 0 and math.isnan(metrics[REWARD])


class _FakeAlgo:
    """algo.train() results from a list; an exception in the list is raised instead."""

    def __init__(self, results: list) -> None:
        self.results = list(results)

    def train(self) -> dict:
        item = self.results.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def stop(self) -> None:
        pass


class _FakeConfig:
    def __init__(self, results: list) -> None:
        self.results = results

    def build_algo(self) -> _FakeAlgo:
        return _FakeAlgo(self.results)


@pytest.mark.parametrize(("bad", "quantity"), [
    (_result(policy_loss=math.nan, num_module_steps_trained=16), "losses/policy_loss"),
    (_result(vf_loss=math.inf), "losses/value_loss"),  # inf: even without a trained step
    (_result(gradients_default_optimizer_global_norm=math.nan, num_module_steps_trained=16),
     "losses/grad_norm"),
    (_result(reward=math.nan), REWARD),  # steps were sampled: a NaN reward is an error
])
def test_a_nan_loss_stops_the_run_naming_iteration_and_quantity(bad: dict, quantity: str
                                                                ) -> None:
    good = _result(policy_loss=0.1, vf_loss=0.1)
    config = _FakeConfig([good, good, bad, good])
    with pytest.raises(NonFiniteError, match=rf"iteration 2: .*{quantity}.* is not finite"):
        train_policy(config, PolicyBudget(max_iterations=4), progress=False)


def test_nan_learner_metrics_of_an_iteration_without_update_are_tolerated(monkeypatch) -> None:
    monkeypatch.setattr("medmask.rl._train.trained_policy_net", lambda algo: None)
    idle = _result(sampled=0, lifetime=None, reward=math.nan, policy_loss=math.nan,
                   num_module_steps_trained=math.nan)
    _, history = train_policy(_FakeConfig([idle, idle]), PolicyBudget(max_iterations=2),
                              progress=False)
    assert len(history) == 2 and history["losses/policy_loss"].isna().all()


def test_a_learner_error_is_reraised_with_the_iteration() -> None:
    good = _result(policy_loss=0.1)
    error = NonFiniteError("policy training: the gradient of net.trunk.0.0.weight is not finite")
    config = _FakeConfig([good, error])
    with pytest.raises(NonFiniteError, match=r"iteration 1: .*net.trunk.0.0.weight"):
        train_policy(config, PolicyBudget(max_iterations=3), progress=False)


@pytest.mark.slow
@pytest.mark.e2e
def test_appo_learns_the_moving_square_with_two_env_runners(ray_session: None, tmp_path) -> None:
    """One real RLlib run, 1 seed, a fixed number of updates: >= 1.5x random and the position
    oracle at masking the hard patches (r = 0.25, p = 0); then a re-run resumes it. The two
    EnvRunners' rewards come from one shared reward actor (the GPU path's reward server)."""
    train, train_hard = moving_square_images(256, seed=0)
    test, test_hard = moving_square_images(128, seed=100)
    model = SmoothingReconstruction()
    server = envs.start_reward_server(model)
    request = server.actor.score.remote  # the server's numbers are the network's own
    masks = np.random.default_rng(0).random((4, 64)) < 0.25
    np.testing.assert_allclose(ray.get(request(train[:4, None], masks)),
                               model(torch.as_tensor(train[:4, None]),
                                     torch.as_tensor(masks)).patch_loss.numpy(), rtol=1e-6)
    config = ahm_appo_config(
        envs.ENV_ID, {"reconstruction": server.client, "images": train},
        num_env_runners=2, num_envs_per_env_runner=8, num_cpus_per_env_runner=0.5,
        train_batch_size=16, lr=3e-3, channels=8, head_depth=1, mask_ratio=0.25,
        random_share=0.0, min_time_s_per_iteration=0.5, images_per_epoch=256, seed=0,
    )
    start = time.perf_counter()
    net, history = train_policy(
        config, PolicyBudget(max_updates=120, time_budget_s=75, checkpoint_every=5),
        checkpoint_dir=tmp_path, progress=False)
    seconds = time.perf_counter() - start
    x = torch.as_tensor(test[:, None])
    policy = ahm_mask(net.masking_logits(x).detach(), model.grid, 0.25, 0.0,
                      torch.Generator().manual_seed(0))
    rates = {
        "policy": hard_hit_rate(policy, test_hard),
        "random": hard_hit_rate(random_mask(len(x), model.grid, 0.25,
                                            generator=torch.Generator().manual_seed(0)),
                                test_hard),
        "position_oracle": hard_hit_rate(position_oracle_masks(train_hard, 16, len(x)),
                                         test_hard),
    }
    log_rho = history["charts/log_rho_mean"].dropna().round(3).tolist()
    print(f"RLlib moving square: {rates}, {history[UPDATES].iloc[-1]:.0f} updates, "
          f"{len(history)} iterations in {seconds:.0f} s; log rho mean {log_rho}")
    assert history[UPDATES].iloc[-1] >= 20
    served = server.stats()
    assert len(set(served["callers"]) - {""}) == 2  # the two EnvRunners (and this check)
    assert served["forwards"] <= served["calls"]
    assert served["images"] >= 0.5 * history[ENV_STEPS].iloc[-1]  # every image was served
    assert rates["policy"] >= 1.5 * rates["random"]
    assert rates["policy"] >= 1.5 * rates["position_oracle"]
    assert isinstance(net, MaskingPolicyNet) and not net.training
    mask = create_mask_strategy("ahm", policy=net)({"image": test[:4]}, net.grid, 0.75)
    assert (mask.sum(dim=1) == 48).all()

    # A re-run continues from the last algorithm checkpoint (every 5 iterations): the history
    # and the env-step count go on from there instead of starting over.
    saved = 5 * (len(history) // 5)
    _, resumed = train_policy(
        config, PolicyBudget(max_iterations=saved + 2, checkpoint_every=0),
        checkpoint_dir=tmp_path, progress=False)
    assert len(resumed) == saved + 2
    steps = resumed[ENV_STEPS].to_numpy()
    assert steps[saved] >= steps[saved - 1] == history[ENV_STEPS].iloc[saved - 1]
    server.stop()

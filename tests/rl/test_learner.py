"""The AHM loss (eq. 8-12) per patch, and the path of the per-patch rewards into the batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

import envs
from envs.ahm_masking import AHMMaskingEnv
from medmask import columns as C
from medmask.data import phantom
from medmask.rl import ahm_appo_config, ahm_patch_loss_terms
from tests.envs.reconstruction import TinyReconstruction


def _hand_batch(seed: int = 0, rows: int = 3, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "r": torch.rand(rows, n, generator=g),
        "v": torch.rand(rows, n, generator=g),
        "logits": torch.randn(rows, n, generator=g),
        "a": (torch.rand(rows, n, generator=g) < 0.5).float(),
    }


def _bernoulli_logp(logits: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return a * torch.log(p) + (1 - a) * torch.log(1 - p)


def test_on_policy_terms_are_eq_8_and_the_gradient_of_eq_10() -> None:
    h = _hand_batch()
    logits = h["logits"].clone().requires_grad_(True)
    values = h["v"].clone().requires_grad_(True)
    logp = _bernoulli_logp(logits, h["a"])
    terms = ahm_patch_loss_terms(
        patch_rewards=h["r"], patch_values=values, logp=logp,
        behaviour_logp=logp.detach(), old_logp=logp.detach(),
        entropy=torch.zeros_like(logp),
    )
    advantage = h["r"] - h["v"]  # eq. 9
    # eq. 8: 1/N 1^T[(r - V) * (r - V)]1 per image, then the batch mean.
    assert terms.value_loss.item() == pytest.approx((advantage**2).mean().item(), rel=1e-6)
    # ratio = 1 -> the surrogate's value is -mean(A); its gradient is eq. 10's.
    assert terms.policy_loss.item() == pytest.approx(-advantage.mean().item(), rel=1e-6)
    (terms.policy_loss + terms.value_loss).backward()
    logits_ref = h["logits"].clone().requires_grad_(True)
    values_ref = h["v"].clone().requires_grad_(True)
    eq10 = -(_bernoulli_logp(logits_ref, h["a"]) * advantage).mean()
    eq8 = ((h["r"] - values_ref) ** 2).mean()
    (eq10 + eq8).backward()
    torch.testing.assert_close(logits.grad, logits_ref.grad)
    torch.testing.assert_close(values.grad, values_ref.grad)
    assert terms.mean_is_ratio.item() == pytest.approx(1.0)


def test_off_policy_ratios_are_clipped_per_patch_not_multiplied() -> None:
    n = 256
    h = _hand_batch(seed=1, rows=2, n=n)
    logp = _bernoulli_logp(h["logits"], h["a"])
    behaviour = logp - 0.05  # every patch 5% more likely now: the product would be e^12.8
    old = logp - 0.02
    terms = ahm_patch_loss_terms(
        patch_rewards=h["r"], patch_values=h["v"], logp=logp, behaviour_logp=behaviour,
        old_logp=old, entropy=torch.zeros_like(logp), clip_param=0.4,
    )
    rho = math.exp(0.03)  # pi_old / mu per patch
    error = h["r"] - h["v"]
    value_target = h["v"] + min(1.0, rho) * error
    advantage = min(1.0, rho) * error
    ratio = min(2.0, math.exp(-0.03)) * math.exp(0.05)  # clip(mu/pi_old) * pi/mu per patch
    surrogate = torch.minimum(advantage * ratio,
                              advantage * min(max(ratio, 0.6), 1.4))
    assert terms.policy_loss.item() == pytest.approx(-surrogate.mean().item(), rel=1e-5)
    assert terms.value_loss.item() == pytest.approx(((value_target - h["v"]) ** 2).mean().item(),
                                                    rel=1e-5)
    assert terms.mean_is_ratio.item() == pytest.approx(math.exp(-0.03), rel=1e-5)
    assert math.isfinite(terms.policy_loss.item())


def test_row_mask_drops_bootstrap_rows() -> None:
    h = _hand_batch(seed=2)
    logp = _bernoulli_logp(h["logits"], h["a"])
    mask = torch.tensor([1.0, 0.0, 1.0])
    terms = ahm_patch_loss_terms(
        patch_rewards=h["r"], patch_values=h["v"], logp=logp, behaviour_logp=logp,
        old_logp=logp, entropy=torch.ones_like(logp) * torch.tensor([[1.0], [9.0], [3.0]]),
        row_mask=mask,
    )
    kept = ((h["r"] - h["v"]) ** 2)[[0, 2]].mean()
    assert terms.value_loss.item() == pytest.approx(kept.item(), rel=1e-6)
    assert terms.entropy.item() == pytest.approx(2.0)


@pytest.fixture(scope="module")
def learner_setup():  # noqa: ANN201
    images = phantom.generate(8, 32, seed=0)[C.IMAGE]
    env = AHMMaskingEnv(TinyReconstruction(), images)
    config = ahm_appo_config(envs.ENV_ID, {}, num_env_runners=0, channels=4, vf_loss_coeff=1.0,
                             entropy_coeff=0.0)
    learner = config.build_learner(env=env)
    module = learner.module["default_policy"]
    episodes, step_infos = [], []
    for seed in range(3):
        obs0, info0 = env.reset(seed=seed)
        out = module.forward_exploration({Columns.OBS: torch.from_numpy(obs0[None])})
        dist = module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        action = dist.sample()
        obs1, reward, terminated, _, info1 = env.step(action[0].numpy())
        step_infos.append(info1)
        episodes.append(SingleAgentEpisode(
            observations=[obs0, obs1], actions=[action[0].numpy()], rewards=[reward],
            infos=[info0, info1], terminated=terminated, len_lookback_buffer=0,
            observation_space=env.observation_space, action_space=env.action_space,
            extra_model_outputs={
                Columns.ACTION_DIST_INPUTS: [out[Columns.ACTION_DIST_INPUTS][0].numpy()],
                Columns.ACTION_LOGP: [dist.logp(action)[0].numpy()],
            },
        ).to_numpy())
    connector = config.build_learner_connector(env.observation_space, env.action_space)
    batch = connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={})
    return config, learner, batch["default_policy"], step_infos


def test_learner_connector_aligns_patch_rewards_with_steps(learner_setup) -> None:  # noqa: ANN001
    _, _, batch, step_infos = learner_setup
    assert batch[Columns.LOSS_MASK].tolist() == [True, False] * 3  # RLlib's bootstrap rows
    for k, info in enumerate(step_infos):
        np.testing.assert_allclose(batch[C.PATCH_REWARDS][2 * k].numpy(), info[C.PATCH_REWARDS])
        assert batch[Columns.REWARDS][2 * k].item() == pytest.approx(
            float(info[C.PATCH_REWARDS].mean()), rel=1e-5)


def test_learner_loss_equals_eq_8_to_12_on_policy(learner_setup) -> None:  # noqa: ANN001
    config, learner, batch, _ = learner_setup
    module = learner.module["default_policy"]
    fwd = module.forward_train(batch)
    logits = fwd[Columns.ACTION_DIST_INPUTS]
    on_policy = dict(batch)
    on_policy[Columns.ACTION_DIST_INPUTS] = logits.detach()  # behaviour = current = target
    loss = learner.compute_loss_for_module(module_id="default_policy", config=config,
                                           batch=on_policy, fwd_out=fwd)
    values = module.compute_patch_values(batch, fwd[Columns.EMBEDDINGS])
    rows = batch[Columns.LOSS_MASK]
    r = batch[C.PATCH_REWARDS][rows]
    v, lg = values[rows], logits[rows]
    a = batch[Columns.ACTIONS][rows].float()
    advantage = (r - v).detach()
    eq10 = -(_bernoulli_logp(lg, a) * advantage).mean()
    eq8 = ((r - v) ** 2).mean()
    assert loss.item() == pytest.approx((-advantage.mean() + eq8).item(), rel=1e-5)
    params = [module.net.policy_head[-1].weight, module.net.value_head[-1].weight,
              module.net.trunk[0][0].weight]
    got = torch.autograd.grad(loss, params, retain_graph=True)
    want = torch.autograd.grad(eq10 + eq8, params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)

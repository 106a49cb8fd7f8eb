"""The AHM loss per pick of the ordered draw, and the path of the masked losses into the batch."""

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
from medmask.rl import NonFiniteError, ahm_appo_config, ahm_pick_loss_terms, pick_advantages
from tests.envs.reconstruction import TinyReconstruction


def _hand_batch(seed: int = 0, rows: int = 3, n: int = 8, k: int = 6, n_random: int = 2
                ) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "losses": torch.rand(rows, k, generator=g),  # L of every pick, random ones first
        "values": torch.rand(rows, k, generator=g),
        "logp": -torch.rand(rows, k - n_random, generator=g) * 2,
        "baselines": torch.rand(rows, k - n_random, generator=g),
    }


def test_on_policy_terms_are_the_per_pick_actor_critic() -> None:
    h = _hand_batch()
    logp = h["logp"].clone().requires_grad_(True)
    values = h["values"].clone().requires_grad_(True)
    terms = ahm_pick_loss_terms(
        pick_losses=h["losses"], pick_values=values, n_random=2, logp=logp,
        behaviour_logp=logp.detach(), old_logp=logp.detach(), baselines=h["baselines"],
        entropy=torch.zeros_like(logp), credit="myopic",
    )
    advantage = h["losses"][:, 2:] - h["baselines"]  # myopic A_t, policy picks only
    # The value head is regressed on EVERY masked patch, the random picks included.
    assert terms.value_loss.item() == pytest.approx(
        ((h["losses"] - h["values"]) ** 2).mean().item(), rel=1e-6)
    # ratio = 1 -> the surrogate's value is -mean(A); its gradient is the score function's.
    assert terms.policy_loss.item() == pytest.approx(-advantage.mean().item(), rel=1e-6)
    (terms.policy_loss + terms.value_loss).backward()
    torch.testing.assert_close(logp.grad, -advantage / advantage.numel())
    torch.testing.assert_close(values.grad, -2 * (h["losses"] - h["values"]) / values.numel())
    assert terms.mean_is_ratio.item() == pytest.approx(1.0)
    assert terms.log_rho_mean.item() == 0.0 and terms.log_rho_std.item() == 0.0


def test_to_go_credit_sums_the_remaining_picks() -> None:
    losses = torch.tensor([[9.0, 1.0, 2.0, 3.0]])  # one random pick (9) never counts
    baselines = torch.tensor([[0.5, 0.25, 1.0]])
    torch.testing.assert_close(pick_advantages(losses[:, 1:], baselines, "to_go"),
                               torch.tensor([[6.0 - 1.5, 5.0 - 0.5, 3.0 - 1.0]]))
    torch.testing.assert_close(pick_advantages(losses[:, 1:], baselines, "myopic"),
                               torch.tensor([[0.5, 1.75, 2.0]]))
    with pytest.raises(ValueError, match="credit"):
        pick_advantages(losses, baselines, "bernoulli")


def test_off_policy_ratios_are_clipped_per_pick_not_multiplied() -> None:
    h = _hand_batch(seed=1, rows=2, n=256, k=192, n_random=0)
    logp = h["logp"]
    behaviour = logp - 0.05  # every pick 5% more likely now: the product would be e^9.6
    old = logp - 0.02
    terms = ahm_pick_loss_terms(
        pick_losses=h["losses"], pick_values=h["values"], n_random=0, logp=logp,
        behaviour_logp=behaviour, old_logp=old, baselines=h["baselines"],
        entropy=torch.zeros_like(logp), clip_param=0.4,
    )
    rho = math.exp(0.03)  # pi_old / mu per pick
    advantage = min(1.0, rho) * (h["losses"] - h["baselines"])
    ratio = min(2.0, math.exp(-0.03)) * math.exp(0.05)  # clip(mu/pi_old) * pi/mu per pick
    surrogate = torch.minimum(advantage * ratio, advantage * min(max(ratio, 0.6), 1.4))
    assert terms.policy_loss.item() == pytest.approx(-surrogate.mean().item(), rel=1e-5)
    assert terms.mean_is_ratio.item() == pytest.approx(math.exp(-0.03), rel=1e-5)
    assert terms.log_rho_mean.item() == pytest.approx(0.05, rel=1e-4)
    assert terms.log_rho_product.item() == pytest.approx(0.05 * 192, rel=1e-4)  # logged only
    assert math.isfinite(terms.policy_loss.item())


def test_row_mask_drops_bootstrap_rows() -> None:
    h = _hand_batch(seed=2)
    mask = torch.tensor([1.0, 0.0, 1.0])
    terms = ahm_pick_loss_terms(
        pick_losses=h["losses"], pick_values=h["values"], n_random=2, logp=h["logp"],
        behaviour_logp=h["logp"], old_logp=h["logp"], baselines=h["baselines"],
        entropy=torch.ones_like(h["logp"]) * torch.tensor([[1.0], [9.0], [3.0]]),
        row_mask=mask,
    )
    kept = ((h["losses"] - h["values"]) ** 2)[[0, 2]].mean()
    assert terms.value_loss.item() == pytest.approx(kept.item(), rel=1e-6)
    assert terms.entropy.item() == pytest.approx(2.0)


def _perturb_output_layers(module) -> None:  # noqa: ANN001
    """As if trained: the zero-initialized output layers would hide the trunk's gradient."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for head in (module.net.policy_head, module.net.value_head):
            head[-1].weight.copy_(torch.randn(head[-1].weight.shape, generator=g))


@pytest.fixture(scope="module")
def learner_setup():  # noqa: ANN201
    images = phantom.generate(8, 32, seed=0)[C.IMAGE]
    env = AHMMaskingEnv(TinyReconstruction(), images)  # 16 patches, k = 12, 4 random
    config = ahm_appo_config(envs.ENV_ID, {}, num_env_runners=0, channels=4, vf_loss_coeff=1.0,
                             entropy_coeff=0.0)
    learner = config.build_learner(env=env)
    module = learner.module["default_policy"]
    _perturb_output_layers(module)
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


def test_learner_connector_aligns_masked_losses_with_steps(learner_setup) -> None:  # noqa: ANN001
    _, _, batch, step_infos = learner_setup
    assert batch[Columns.LOSS_MASK].tolist() == [True, False] * 3  # RLlib's bootstrap rows
    for k, info in enumerate(step_infos):
        np.testing.assert_allclose(batch[C.PATCH_REWARDS][2 * k].numpy(), info[C.PATCH_REWARDS])
        picks = batch[Columns.ACTIONS][2 * k].numpy()
        assert batch[Columns.REWARDS][2 * k].item() == pytest.approx(
            float(info[C.PATCH_REWARDS][picks].mean()), rel=1e-5)


def test_learner_loss_is_the_per_pick_loss_on_policy(learner_setup) -> None:  # noqa: ANN001
    config, learner, batch, _ = learner_setup
    module = learner.module["default_policy"]
    fwd = module.forward_train(batch)
    logits = fwd[Columns.ACTION_DIST_INPUTS]
    on_policy = dict(batch)
    on_policy[Columns.ACTION_DIST_INPUTS] = logits.detach()  # behaviour = current
    module.make_target_networks()  # target = current (the fixture perturbed the heads)
    loss = learner.compute_loss_for_module(module_id="default_policy", config=config,
                                           batch=on_policy, fwd_out=fwd)
    rows = batch[Columns.LOSS_MASK]
    # The reference runs the plain network itself (not the module's forward outputs).
    z_all, values = module.net(batch[Columns.OBS])
    a = batch[Columns.ACTIONS][rows].long()
    L = batch[C.PATCH_REWARDS][rows].gather(1, a)  # noqa: N806
    v, z = values[rows], z_all[rows]
    # By hand: 4 random picks, then 8 policy picks; pi_t = softmax over the untaken patches.
    logp_terms, advantages = [], []
    for row in range(len(a)):
        taken = set(a[row, :4].tolist())
        for t in range(4, 12):
            free = [j for j in range(16) if j not in taken]
            log_pi = torch.log_softmax(z[row, free], dim=0)
            pi = log_pi.exp().detach()
            logp_terms.append(log_pi[free.index(int(a[row, t]))])
            advantages.append((L[row, t] - (pi * v[row, free].detach()).sum()).detach())
            taken.add(int(a[row, t]))
    policy = -(torch.stack(logp_terms) * torch.stack(advantages)).mean()
    value = ((L - v.gather(1, a)) ** 2).mean()
    assert loss.item() == pytest.approx((-torch.stack(advantages).mean() + value).item(),
                                        rel=1e-5)
    params = [module.net.policy_head[-1].weight, module.net.value_head[-1].weight,
              module.net.trunk[0][0].weight]
    got = torch.autograd.grad(loss, params, retain_graph=True)
    want = torch.autograd.grad(policy + value, params)
    for g, w in zip(got, want, strict=True):  # float32 sums in another order: an element
        # that cancels to ~1 % of the tensor's largest may differ by 1e-4 of that largest
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))
    assert got[2].abs().max() > 1e-6  # the trunk gets a gradient: not vacuous


def test_nan_reward_stops_the_update_with_its_name(learner_setup) -> None:  # noqa: ANN001
    config, learner, batch, _ = learner_setup
    module = learner.module["default_policy"]
    bad = dict(batch)
    bad[C.PATCH_REWARDS] = batch[C.PATCH_REWARDS].clone()
    bad[C.PATCH_REWARDS][0, 0] = float("nan")
    fwd = module.forward_train(bad)
    loss = learner.compute_loss_for_module(module_id="default_policy", config=config,
                                           batch=bad, fwd_out=fwd)
    assert loss.grad_fn is None  # nothing to apply
    try:
        with pytest.raises(NonFiniteError, match="reward"):
            learner.update(training_data=None, timesteps={})
    finally:
        learner._nonfinite = None


def test_lr_schedule_runs_on_trained_images_not_sampled_steps(learner_setup) -> None:  # noqa: ANN001
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    config, learner, _, _ = learner_setup  # lr 3e-4, x0.9 every 25 epochs of 256 images
    optimizer = next(iter(learner._named_optimizers.values()))
    clock = learner.trained_images
    try:
        learner.trained_images = 0
        learner.after_gradient_based_update(timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 10**9})
        assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)  # sampled: ignored
        learner.trained_images = 25 * 256
        learner.after_gradient_based_update(timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0})
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2.7e-4)
    finally:
        learner.trained_images = clock


def test_nan_gradient_is_not_applied_and_stops_the_update(learner_setup) -> None:  # noqa: ANN001
    _, learner, _, _ = learner_setup
    module = learner.module["default_policy"]
    weight = module.net.trunk[0][0].weight
    loss = (weight.sum() * float("nan")).reshape(())
    try:
        grads = learner.compute_gradients({"default_policy": loss})
        assert grads == {} and all(p.grad is None for p in learner._params.values())
        with pytest.raises(NonFiniteError, match="gradient of .*weight"):
            learner.update(training_data=None, timesteps={})
    finally:
        learner._nonfinite = None

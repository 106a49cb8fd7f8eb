"""The AHM network (Table III) and its RLModule: per-patch outputs on any grid."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS

from medmask import columns as C
from medmask.masking import PatchGrid, create_mask_strategy
from medmask.rl import AHMPolicyModule, MaskingPolicyNet, downsampling_stages


def _module(size: int = 32, n: int = 16, **model_config: object) -> AHMPolicyModule:
    torch.manual_seed(0)
    k = int(np.floor(float(model_config.get("mask_ratio", 0.75)) * n))
    return AHMPolicyModule(
        observation_space=gym.spaces.Box(0.0, 1.0, (1, size, size), np.float32),
        action_space=gym.spaces.MultiDiscrete([n] * k),
        model_config={"channels": 4, **model_config},
    )


def _perturb_output_layers(module: AHMPolicyModule) -> None:
    for head in (module.net.policy_head, module.net.value_head):  # as if trained
        torch.nn.init.normal_(head[-1].weight, std=3.0)


def test_downsampling_follows_the_patch_size() -> None:
    assert downsampling_stages(PatchGrid(256, 256, patch_size=16)) == (4, False)  # paper
    assert downsampling_stages(PatchGrid(64, 64, patch_size=8)) == (3, False)
    assert downsampling_stages(PatchGrid(518, 518, num_patches=1370)) == (3, True)  # 13x14 px
    assert downsampling_stages(PatchGrid(30, 30, patch_size=8)) == (3, True)  # border left


def test_heads_start_at_equal_logits_and_zero_value() -> None:
    module = _module()
    obs = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(module.masking_logits(obs), torch.zeros(2, 16))
    torch.testing.assert_close(module.compute_patch_values({Columns.OBS: obs}),
                               torch.zeros(2, 16))


def test_module_outputs_one_logit_and_value_per_patch() -> None:
    module = _module()
    _perturb_output_layers(module)
    obs = torch.rand(3, 1, 32, 32)
    out = module.forward_exploration({Columns.OBS: obs})
    logits = out[Columns.ACTION_DIST_INPUTS]
    assert logits.shape == (3, 16)
    train = module.forward_train({Columns.OBS: obs})
    assert train[Columns.EMBEDDINGS].shape == (3, 4, 4, 4)  # c x rows x cols
    values = module.compute_patch_values({Columns.OBS: obs}, train[Columns.EMBEDDINGS])
    assert values.shape == (3, 16)
    torch.testing.assert_close(module.compute_values({Columns.OBS: obs},
                                                     train[Columns.EMBEDDINGS]),
                               values.mean(dim=1))
    z = module.masking_logits(obs)
    assert z.shape == (3, 16) and torch.isfinite(z).all()
    assert z.std() > 0.05  # per-patch, image-dependent outputs
    torch.testing.assert_close(z, module.net.policy_logits(module.net.features(obs)))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())  # one mode
    # Table III: 3 conv-norm-ReLU + a final conv per head; input, 3 stride-2, output layers.
    assert len(module.net.policy_head) == 4 and len(module.net.value_head) == 4
    assert len(module.net.trunk) == 5
    strides = [seq[0].stride[0] for seq in module.net.trunk]
    assert strides == [1, 2, 2, 2, 1]


def test_odd_grids_use_adaptive_pooling() -> None:
    module = _module(size=30, n=10)  # 10 patches (k = 7): 4 x 3 cells of 7x10 px, 2 unused
    out = module.forward_exploration({Columns.OBS: torch.rand(2, 1, 30, 30)})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (2, 10)
    with pytest.raises(ValueError, match="patches"):
        _module(n=10, patch_size=8)
    with pytest.raises(ValueError, match="weighting"):
        _module(weighting="odds")
    with pytest.raises(ValueError, match="mask ratio"):  # 12 picks are r = 0.75, not 0.5
        AHMPolicyModule(
            observation_space=gym.spaces.Box(0.0, 1.0, (1, 32, 32), np.float32),
            action_space=gym.spaces.MultiDiscrete([16] * 12), model_config={"mask_ratio": 0.5})


def test_target_network_starts_equal_to_the_policy() -> None:
    module = _module()
    _perturb_output_layers(module)  # zero output layers would make any two networks agree
    module.make_target_networks()
    obs = torch.rand(4, 1, 32, 32)
    main = module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    target = module.forward_target({Columns.OBS: obs})[TARGET_NETWORK_ACTION_DIST_INPUTS]
    assert main.std() > 0.05
    torch.testing.assert_close(main, target)
    # Train mode and eval mode compute the same function (GroupNorm): behaviour = current.
    module.eval()
    torch.testing.assert_close(module.forward_exploration({Columns.OBS: obs})[
        Columns.ACTION_DIST_INPUTS], main)
    assert module.get_target_network_pairs()[0][0] is module.net


def test_vgg16_trunk_by_config() -> None:
    net = MaskingPolicyNet(1, PatchGrid(64, 64, patch_size=16), channels=8, trunk="vgg16")
    logits, values = net(torch.rand(2, 1, 64, 64))
    assert logits.shape == values.shape == (2, 16)
    with pytest.raises(ValueError, match="trunk"):
        MaskingPolicyNet(1, PatchGrid(64, 64, patch_size=16), trunk="resnet")


def test_module_serves_as_the_ahm_mask_strategy_policy() -> None:
    module = _module()
    strategy = create_mask_strategy("ahm", policy=module, random_share=0.3)
    mask = strategy({"image": torch.rand(5, 32, 32)}, PatchGrid(32, 32, patch_size=8), 0.75,
                    generator=torch.Generator().manual_seed(0))
    assert mask.shape == (5, 16) and (mask.sum(dim=1) == 12).all()
    sampled = module.get_exploration_action_dist_cls().from_logits(torch.zeros(2, 16)).sample()
    assert sampled.shape == (2, 12)


def test_rows_of_autoreset_steps_skip_the_network() -> None:
    module = _module()
    _perturb_output_layers(module)
    obs = torch.rand(4, 1, 32, 32)
    full = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    used = torch.tensor([True, False, True, False])
    out = module.forward_exploration({Columns.OBS: obs, C.ACTION_USED: used})
    part = out[Columns.ACTION_DIST_INPUTS]
    torch.testing.assert_close(part[used], full[used])  # the rows the env uses: unchanged
    assert (part[~used] == 0).all()  # ignored by the env's autoreset: never computed
    assert Columns.ACTIONS not in out  # RLlib's GetActions draws them
    out = module.forward_inference({Columns.OBS: obs, C.ACTION_USED: torch.ones(4, dtype=bool)})
    torch.testing.assert_close(out[Columns.ACTION_DIST_INPUTS], full)
    out = module.forward_exploration({Columns.OBS: obs, C.ACTION_USED: torch.zeros(4, dtype=bool)})
    torch.testing.assert_close(out[Columns.ACTION_DIST_INPUTS], torch.zeros_like(full))
    assert out[Columns.ACTIONS].shape == (4, 12)  # placeholders: no draw for ignored actions
    assert (out[Columns.ACTIONS] == torch.arange(12)).all()
    assert (out[Columns.ACTION_LOGP] == 0).all()


def test_an_env_runner_module_stays_in_eval_mode() -> None:
    module = AHMPolicyModule(
        observation_space=gym.spaces.Box(0.0, 1.0, (1, 32, 32), np.float32),
        action_space=gym.spaces.MultiDiscrete([16] * 12), inference_only=True,
        model_config={"channels": 4},
    )
    assert not any(m.training for m in module.modules())
    module.forward_exploration({Columns.OBS: torch.rand(2, 1, 32, 32)})
    assert not any(m.training for m in module.modules())
    module.train()  # switched as a whole
    assert all(m.training for m in module.modules())

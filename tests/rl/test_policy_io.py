"""Policy checkpoints: one file, loadable without RLlib, usable by the ahm mask strategy."""

from __future__ import annotations

import pytest
import torch

from medmask.masking import PatchGrid
from medmask.rl import MaskingPolicyNet, load_policy, policy_digest, save_policy
from medmask.train import build_mask_strategy
from medmask.train._masks import masking_cache_key


def _net(seed: int = 0) -> MaskingPolicyNet:
    torch.manual_seed(seed)
    net = MaskingPolicyNet(1, PatchGrid(32, 32, patch_size=8), channels=4)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    return net.eval()


def test_round_trip_keeps_config_and_outputs(tmp_path) -> None:
    net = _net()
    path = save_policy(net, tmp_path / "run")
    assert path.name == "policy.pt"
    loaded = load_policy(tmp_path / "run")
    assert loaded.config == net.config and not loaded.training
    images = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(loaded.masking_logits(images), net.masking_logits(images))


def test_bad_checkpoints_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no AHM policy checkpoint"):
        load_policy(tmp_path / "missing")
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(ValueError, match="bogus.pt is not a medmask AHM policy"):
        load_policy(bogus)


def test_ahm_strategy_from_settings_loads_the_policy(tmp_path) -> None:
    path = save_policy(_net(), tmp_path)
    masking = {"name": "ahm", "ratio": 0.75,
               "params": {"policy_checkpoint": str(path), "random_share": 0.0}}
    strategy = build_mask_strategy(masking)
    mask = strategy({"image": torch.rand(4, 32, 32)}, PatchGrid(32, 32, patch_size=8), 0.75)
    assert mask.shape == (4, 16) and (mask.sum(1) == 12).all()
    with pytest.raises(ValueError, match="policy_checkpoint"):
        build_mask_strategy({"name": "ahm", "ratio": 0.75, "params": {}})


def test_cache_key_changes_when_the_policy_file_changes(tmp_path) -> None:
    masking = {"name": "ahm", "params": {"policy_checkpoint": str(tmp_path / "policy.pt")}}
    save_policy(_net(0), tmp_path)
    first = masking_cache_key(masking)
    assert first["policy_digest"] == policy_digest(tmp_path)
    save_policy(_net(1), tmp_path)
    assert masking_cache_key(masking)["policy_digest"] != first["policy_digest"]
    assert masking_cache_key({"name": "random", "params": {}}) == {"name": "random", "params": {}}

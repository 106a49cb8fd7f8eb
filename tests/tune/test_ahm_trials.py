"""AHM sweep trials: a ``policy_checkpoint`` path in the trial's masking params is loaded with
``medmask.rl.load_policy`` where the mask strategy is built (on the Train worker)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from medmask.train import build_mask_strategy
from medmask.tune import trial_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import tiny_settings  # noqa: E402

import medmask.rl as rl  # noqa: E402


def test_ahm_trial_builds_its_strategy_from_a_saved_policy(tmp_path):
    from medmask.masking import PatchGrid

    grid = PatchGrid(64, 64, patch_size=8)
    path = rl.save_policy(rl.MaskingPolicyNet(1, grid), tmp_path / "policy")
    strategies = {"ahm": {"random_share": 0.3, "policy_checkpoint": str(path)}}
    settings = trial_settings(tiny_settings(tmp_path), {"strategy": "ahm", "random_share": 0.5,
                                                        "ratio": 0.6}, strategies)
    strategy = build_mask_strategy(dataclasses.asdict(settings.masking))
    images = torch.rand(3, 64, 64)
    mask = strategy({"image": images}, grid, 0.6, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, grid.num_patches)
    assert (mask.sum(1) == int(0.6 * grid.num_patches)).all()


def test_a_missing_policy_fails_with_its_path(tmp_path):
    masking = {"name": "ahm", "ratio": 0.6,
               "params": {"policy_checkpoint": str(tmp_path / "none" / "policy.pt")}}
    with pytest.raises(FileNotFoundError, match="none"):
        build_mask_strategy(masking)

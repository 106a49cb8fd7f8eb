"""The loop skeleton's device options: a compiled (and DDP-wrapped) model unwraps to the module
whose state dict is checkpointed; the scaling's options reach the loop config."""

from __future__ import annotations

import os

import torch

from medmask.train import ScalingSettings, build_trainer
from medmask.train._loop_utils import unwrap


class _Wrapper(torch.nn.Module):  # stands in for DDP: the wrapped module is ``.module``
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def test_unwrap_sees_through_compile_and_ddp():
    model = torch.nn.Linear(3, 2)
    assert unwrap(model) is model
    assert unwrap(_Wrapper(model)) is model
    compiled = torch.compile(_Wrapper(model))  # lazy: nothing compiles until it is called
    assert unwrap(compiled) is model
    assert set(unwrap(compiled).state_dict()) == {"weight", "bias"}  # no "_orig_mod." prefix
    assert unwrap(torch.compile(model)) is model


def test_scaling_device_options_reach_the_loop_config(tmp_path):
    scaling = ScalingSettings()
    assert scaling.channels_last is None and scaling.compile is False  # CUDA only; opt-in
    trainer = build_trainer(lambda config: None, {"epochs": 1}, {},
                            scaling=ScalingSettings(channels_last=True, compile=True,
                                                    torch_threads=2),
                            storage_path=tmp_path, name="options")
    assert trainer.train_loop_config == {
        "epochs": 1, "device_options": {"channels_last": True, "compile": True,
                                        "torch_threads": 2}}


def test_the_controller_polls_its_workers_every_half_second(tmp_path, monkeypatch):
    """Ray Train's 2-s default poll noticed a finished loop 4-5 s late on every launch."""
    from medmask.train._trainer import POLL_INTERVAL_ENV

    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    build_trainer(lambda config: None, {}, {}, scaling=ScalingSettings(),
                  storage_path=tmp_path, name="poll")
    assert os.environ[POLL_INTERVAL_ENV] == "0.5"
    monkeypatch.setenv(POLL_INTERVAL_ENV, "3")  # a user's own setting wins
    build_trainer(lambda config: None, {}, {}, scaling=ScalingSettings(),
                  storage_path=tmp_path, name="poll")
    assert os.environ[POLL_INTERVAL_ENV] == "3"

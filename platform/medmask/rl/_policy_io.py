"""Saving and loading a trained AHM masking policy (the ``ahm`` mask strategy's input).

A policy checkpoint is one file, ``policy.pt``: the network's plain-value ``config`` (enough to
rebuild it, :meth:`MaskingPolicyNet.from_config`) and its ``state_dict``. It loads with
``torch.load(..., weights_only=True)`` on any machine, without RLlib, so a policy trained on one
dataset can mask another (AHM's transfer ablation) and a Tune trial can take it as a path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from medmask.rl._module import MaskingPolicyNet

POLICY_FILE = "policy.pt"


def policy_file(path: str | Path) -> Path:
    """The ``policy.pt`` of a checkpoint folder, or ``path`` itself when it is a file."""
    path = Path(path)
    return path / POLICY_FILE if path.is_dir() or not path.suffix else path


def save_policy(net: MaskingPolicyNet, path: str | Path) -> Path:
    """Write ``net`` to ``path`` (a folder gets ``policy.pt``); returns the file written."""
    if not isinstance(net, MaskingPolicyNet):
        raise ValueError(f"save_policy expects a MaskingPolicyNet, got {type(net)}")
    target = policy_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    tmp = target.with_suffix(".tmp")
    torch.save({"config": dict(net.config), "state_dict": state}, tmp)
    tmp.replace(target)  # never leave a half-written policy behind
    return target


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> MaskingPolicyNet:
    """The policy saved at ``path`` (folder or file), in eval mode on ``device``."""
    target = policy_file(path)
    if not target.is_file():
        raise FileNotFoundError(f"no AHM policy checkpoint at {target}")
    try:
        saved = torch.load(target, map_location=device, weights_only=True)
        net = MaskingPolicyNet.from_config(saved["config"])
        net.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError, TypeError) as error:
        raise ValueError(f"{target} is not a medmask AHM policy checkpoint: {error}") from error
    return net.to(device).eval()


def policy_digest(path: str | Path) -> str:
    """SHA-256 (16 hex) of a policy checkpoint: part of cache keys of runs that use it."""
    return hashlib.sha256(policy_file(path).read_bytes()).hexdigest()[:16]

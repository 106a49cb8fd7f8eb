"""Numerical safety of policy training: NaN or inf stops the run, with what and where.

RLlib's torch learner, left alone, zeroes NaN/inf gradients and goes on (and logs whole
parameter tensors); the run then trains on garbage and fails later somewhere unrelated. Here a
non-finite loss, gradient norm or reward raises :class:`NonFiniteError` naming the quantity;
:func:`medmask.rl.train_policy` adds the iteration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or reward of policy training is NaN or inf."""


def check_finite(quantity: str, value: Any, where: str = "policy training") -> None:
    """Raise :class:`NonFiniteError` when ``value`` (a number or tensor) has NaN or inf."""
    if isinstance(value, torch.Tensor):
        finite = bool(torch.isfinite(value.detach()).all())
        shown = value.detach().float().flatten()[:4].tolist() if not finite else None
    else:
        finite = math.isfinite(float(value))
        shown = value
    if not finite:
        raise NonFiniteError(f"{where}: {quantity} is not finite ({shown}); stopping the run")


def check_finite_metrics(metrics: Mapping[str, Any], names: tuple[str, ...], where: str) -> None:
    """Check the named entries of ``metrics`` that are present (missing ones are skipped)."""
    for name in names:
        if name in metrics and metrics[name] is not None:
            check_finite(name, metrics[name], where)

"""The registry of mask strategies, timm-style: a decorator fills it, a factory reads it.

Every strategy has one signature, ``f(batch, grid, ratio, *, generator) -> bool [B, N]``:
``batch`` is a mapping of tensors (``image``, ``organs``, ``mask_seed``, ...) from which each
strategy reads what it needs; True = masked; every row has the same count so a batch stacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch

from medmask.masking._grid import PatchGrid
from medmask.registry import Registry


class MaskStrategy(Protocol):
    """A configured strategy: ``f(batch, grid, ratio, *, generator) -> bool [B, N]``."""

    def __call__(
        self,
        batch: Mapping[str, Any],
        grid: PatchGrid,
        ratio: float,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


StrategyFactory = Callable[..., MaskStrategy]

MASK_STRATEGIES: Registry[StrategyFactory] = Registry("mask strategy")


def register_mask_strategy(
    name: str, *, needs: tuple[str, ...] = (), requires: tuple[str, ...] = (),
    reports: tuple[str, ...] = (),
) -> Callable[[StrategyFactory], StrategyFactory]:
    """Register a strategy factory under ``name``.

    Args:
        name: the name used by Hydra (``masking=NAME``) and Tune grids.
        needs: the batch columns the strategy reads.
        requires: factory parameters that must come from outside the batch, already loaded
            (``("policy",)`` for AHM: the caller loads the checkpoint).
        reports: statistics columns the preprocessing stage reports for it
            (``("filled_share",)`` for RGMIM).
    """
    return MASK_STRATEGIES.register(name, needs=needs, requires=requires, reports=reports)


def list_mask_strategies(filter: str = "") -> list[str]:  # noqa: A002 (timm's name)
    """Sorted names of the registered strategies, optionally those containing ``filter``."""
    return MASK_STRATEGIES.names(filter)


def strategy_needs(name: str) -> tuple[str, ...]:
    """The batch columns that strategy ``name`` reads."""
    return MASK_STRATEGIES.entry(name).needs


def strategy_requires(name: str) -> tuple[str, ...]:
    """The loaded objects strategy ``name`` must be given (e.g. ``("policy",)``)."""
    return MASK_STRATEGIES.entry(name).requires


def strategy_reports(name: str) -> tuple[str, ...]:
    """The statistics columns reported for strategy ``name`` (e.g. ``("filled_share",)``)."""
    return MASK_STRATEGIES.entry(name).reports


def create_mask_strategy(name: str, **params: Any) -> MaskStrategy:
    """Build the strategy registered as ``name`` with its parameters.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    return MASK_STRATEGIES.create(name, **params)  # type: ignore[no-any-return]

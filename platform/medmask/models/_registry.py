"""The registry of medmask's model configurations, timm-style (``timm/models/_registry.py``).

A decorator fills it with builder functions named after the configuration
(``mae_vit_tiny_64``, ``mae_vit_base_224``, ``unet``, ...); :func:`create_model` builds one by
name with overrides (``model.name`` / ``model.params`` in Hydra); :func:`list_models` lists
them. Unknown names and unknown parameters raise ``ValueError`` listing the valid choices.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from medmask.registry import Registry

ModelBuilder = Callable[..., torch.nn.Module]
M = TypeVar("M", bound=torch.nn.Module)

MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Register ``builder`` under its function name (timm's ``@register_model``)."""
    return MODELS.register(builder.__name__)(builder)


def list_models(filter: str = "") -> list[str]:  # noqa: A002 (timm's name)
    """Sorted names of the registered models, optionally those containing ``filter``."""
    return MODELS.names(filter)


def is_model(name: str) -> bool:
    """True when ``name`` is a registered model."""
    return name in MODELS


def create_model(name: str, **params: Any) -> torch.nn.Module:
    """Build the model registered as ``name``; ``params`` override its configuration.

    Raises:
        ValueError: for an unknown name (listing the valid ones) or an unknown parameter.
    """
    return MODELS.create(name, **params)  # type: ignore[no-any-return]


def build_with_overrides(
    cls: type[M], name: str, defaults: Mapping[str, Any], overrides: Mapping[str, Any]
) -> M:
    """``cls(**{**defaults, **overrides})`` after checking every override is a parameter.

    Used by the registered builders so a typo in a Hydra override says what was expected.
    """
    accepted = set(inspect.signature(cls).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(
            f"model {name!r} ({cls.__name__}) has no parameter(s) {unknown}; "
            f"valid parameters: {sorted(accepted)}"
        )
    return cls(**{**defaults, **overrides})

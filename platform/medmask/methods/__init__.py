"""Learning methods: a registry, one entry per method (``method=<name>`` in Hydra).

Each entry says what its pretraining loop trains and optimizes (:class:`LoopParts`), which
batch columns it reads, and what fine-tuning reads from its checkpoint; the one epoch-loop
skeleton of :mod:`medmask.train` runs every method. Masked image modeling fills it now
(``mae``, ``rgmim``, ``ahm``). Pure torch: no Ray, no MLflow.
"""

from medmask.methods import _mim  # noqa: F401  (fills the registry)
from medmask.methods._mim import masked_image_modeling
from medmask.methods._registry import (
    METHODS,
    LoopParts,
    Method,
    create_method,
    list_methods,
    register_method,
)

__all__ = [
    "METHODS",
    "LoopParts",
    "Method",
    "create_method",
    "list_methods",
    "masked_image_modeling",
    "register_method",
]

"""Learning methods: a registry, one entry per method (``method=<name>`` in Hydra).

Each entry says what its pretraining loop trains and optimizes (:class:`LoopParts`), which
batch columns it reads, and what fine-tuning reads from its checkpoint; the one epoch-loop
skeleton of :mod:`medmask.train` runs every method. Masked image modeling fills it now
(``mae``, ``rgmim``, ``ahm``); contrastive learning fills it beside them (``simclr`` and the
segmentation-guided options ``masked_contrastive``, ``pathology_aware``, ``seg_crop``).
Pure torch: no Ray, no MLflow.
"""

from medmask.methods import _contrastive, _mim  # noqa: F401  (fill the registry)
from medmask.methods._contrastive import (
    nt_xent,
    nt_xent_pair_terms,
    two_views,
    weighted_nt_xent,
)
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
    "nt_xent",
    "nt_xent_pair_terms",
    "register_method",
    "two_views",
    "weighted_nt_xent",
]

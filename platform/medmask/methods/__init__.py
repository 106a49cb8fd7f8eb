"""Learning methods: a registry, one entry per method (``method=<name>`` in Hydra).

Each entry says what its pretraining loop trains and optimizes (:class:`LoopParts`), which
batch columns it reads, and what fine-tuning reads from its checkpoint; the one epoch-loop
skeleton of :mod:`medmask.train` runs every method. Masked image modeling fills it now
(``mae``, ``rgmim``, ``ahm``); contrastive learning fills it beside them (``simclr`` and the
segmentation-guided options ``masked_contrastive``, ``multi_region``, ``pathology_aware``,
``seg_crop``, ``seg_attention``, and the reconstruction control ``simclr_recon``).
Pure torch: no Ray, no MLflow.
"""

from medmask.methods import _contrastive, _mim, _seg_attention  # noqa: F401  (the registry)
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
from medmask.methods._seg_attention import (
    SegAttentionParams,
    consistency_loss,
    seg_attention_loss,
)

__all__ = [
    "METHODS",
    "LoopParts",
    "Method",
    "SegAttentionParams",
    "consistency_loss",
    "create_method",
    "list_methods",
    "masked_image_modeling",
    "nt_xent",
    "nt_xent_pair_terms",
    "register_method",
    "seg_attention_loss",
    "two_views",
    "weighted_nt_xent",
]

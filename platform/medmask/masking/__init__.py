"""Patch grids and mask strategies: pure numpy/torch, vectorized over the batch.

No Ray, no MLflow, no file I/O in this room. Public API:

- :class:`PatchGrid`: the geometry of patches, pooling of pixel maps to patches.
- :func:`random_mask`, :func:`apply_patch_mask`: MAE random masking and pixel zeroing.
- :func:`ahm_mask`, :func:`ahm_draw`, :func:`plackett_luce_log_prob`, :func:`inclusion_rate`:
  AHM's fixed-count sampler (a random share, then a Plackett-Luce draw on the policy's
  logits; the ordered draw and its exact log-prob; ``ahm`` strategy).
- :func:`region_guided_mask`, :func:`patch_validity`: RGMIM region-guided masking (``rgmim``).
- :func:`sample_from_scores`: fixed-count sampling in proportion to per-patch scores.
- :func:`epoch_masks`: a strategy's masks for one training epoch (keyed per image).
- :func:`create_mask_strategy`, :func:`list_mask_strategies`, :func:`register_mask_strategy`:
  the registry (``masking=NAME`` in Hydra).
- Pixel-space evaluation maskers: :func:`anatomical_mask` (top gaze pixels),
  :func:`non_anatomical_mask` (rectangles outside :func:`anatomy_region`),
  :func:`contour_overlay` (x + alpha * Contour(m)), and their registry
  :func:`create_pixel_masker` / :func:`list_pixel_maskers`.
"""

from medmask.masking import _strategies  # noqa: F401  (fills the registry)
from medmask.masking._ahm import (
    ahm_draw,
    ahm_mask,
    available_before,
    check_random_share,
    draw_to_mask,
    inclusion_rate,
    masked_log_softmax,
    num_random,
    plackett_luce_log_prob,
    policy_logits,
)
from medmask.masking._anatomical import anatomical_mask, combined_heatmap
from medmask.masking._contour import DEFAULT_STRUCTURES, contour_bands, contour_overlay
from medmask.masking._epoch import epoch_masks
from medmask.masking._grid import PatchGrid
from medmask.masking._noise import keyed_uniform, mask_seeds, uniform_noise
from medmask.masking._non_anatomical import non_anatomical_mask
from medmask.masking._patch import apply_patch_mask, mask_lowest, random_mask, sample_from_scores
from medmask.masking._pixel_maskers import (
    PIXEL_MASKERS,
    PixelMasker,
    PixelMaskResult,
    create_pixel_masker,
    list_pixel_maskers,
    pixel_masker_needs,
    register_pixel_masker,
    zero_pixels,
)
from medmask.masking._region import ANATOMY_LABELS, anatomy_region
from medmask.masking._region_guided import (
    RegionGuidedStats,
    patch_validity,
    region_guided_mask,
)
from medmask.masking._registry import (
    MASK_STRATEGIES,
    MaskStrategy,
    create_mask_strategy,
    list_mask_strategies,
    register_mask_strategy,
    strategy_needs,
    strategy_reports,
    strategy_requires,
)
from medmask.masking._validate import check_ratio, num_masked

__all__ = [
    "policy_logits",
    "num_random",
    "masked_log_softmax",
    "check_random_share",
    "available_before",
    "MASK_STRATEGIES",
    "PIXEL_MASKERS",
    "ANATOMY_LABELS",
    "DEFAULT_STRUCTURES",
    "MaskStrategy",
    "PatchGrid",
    "PixelMaskResult",
    "PixelMasker",
    "RegionGuidedStats",
    "ahm_draw",
    "ahm_mask",
    "draw_to_mask",
    "inclusion_rate",
    "plackett_luce_log_prob",
    "anatomical_mask",
    "anatomy_region",
    "apply_patch_mask",
    "check_ratio",
    "combined_heatmap",
    "contour_bands",
    "contour_overlay",
    "create_mask_strategy",
    "create_pixel_masker",
    "epoch_masks",
    "keyed_uniform",
    "list_mask_strategies",
    "list_pixel_maskers",
    "mask_lowest",
    "mask_seeds",
    "non_anatomical_mask",
    "num_masked",
    "patch_validity",
    "pixel_masker_needs",
    "random_mask",
    "region_guided_mask",
    "register_mask_strategy",
    "register_pixel_masker",
    "sample_from_scores",
    "strategy_needs",
    "strategy_reports",
    "strategy_requires",
    "uniform_noise",
    "zero_pixels",
]

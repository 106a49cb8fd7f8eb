"""Rule-based organ and pathology segmentation with OpenCV (Segmentation-Guided SSL guide).

Pure numpy/OpenCV/torch: no Ray, no MLflow, no file I/O. Options of the guide:
1 lungs (:func:`segment_lungs`), 2 regions (:func:`multi_region_segmentation`),
3 pathology (:func:`enhanced_lung_segmentation`), 4 crop and augmentation
(:func:`segmentation_guided_crop`, :func:`context_augment`); 5's masks compared across
views (:func:`warp_between_views`).
"""

from medmask.segmentation._augment import (
    AugmentConfig,
    AugmentParams,
    AugmentResult,
    affine_matrices,
    batch_generator,
    context_augment,
    keyed_augment_params,
    sample_augment_params,
    swap_lungs,
    warp_between_views,
)
from medmask.segmentation._crop import CropResult, lung_boxes, segmentation_guided_crop
from medmask.segmentation._lungs import (
    lung_mask,
    scaled_kernel,
    segment_lungs,
    segment_lungs_single,
)
from medmask.segmentation._pathology import (
    EnhancedSegmentation,
    enhanced_lung_segmentation,
    remove_small_components,
    scaled_block_size,
    segment_pathology,
)
from medmask.segmentation._regions import REGION_NAMES, multi_region_segmentation, region_masks

__all__ = [
    "REGION_NAMES",
    "AugmentConfig",
    "AugmentParams",
    "AugmentResult",
    "CropResult",
    "EnhancedSegmentation",
    "affine_matrices",
    "batch_generator",
    "context_augment",
    "enhanced_lung_segmentation",
    "keyed_augment_params",
    "lung_boxes",
    "lung_mask",
    "multi_region_segmentation",
    "region_masks",
    "remove_small_components",
    "sample_augment_params",
    "scaled_block_size",
    "scaled_kernel",
    "segment_lungs",
    "segment_lungs_single",
    "segment_pathology",
    "segmentation_guided_crop",
    "swap_lungs",
    "warp_between_views",
]

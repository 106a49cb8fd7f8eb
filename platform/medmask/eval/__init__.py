"""Metrics, figures and the evaluation-protocol registry.

- Classification and segmentation metrics (:mod:`.classification`, :mod:`.metrics`).
- Evaluation protocols: :func:`register_protocol`, :func:`run_protocol`,
  :func:`list_protocols` (``experiments/evaluate.py eval=<name>``); ``masked_area`` reports
  what each inference masking condition really masks; ``grounding`` scores whether a
  classifier relies on the anatomy (:func:`evaluate_grounding`, :class:`GroundingResult`);
  ``clip_overlay`` scores Table 2's training x test grid of contour overlays on a CLIP
  (:func:`evaluate_clip_overlay`, :class:`OverlayResult`).
- Study controls: the shortcut baseline and the inpainting floors of MIM
  (:mod:`._baselines`), paired bootstrap intervals between arms (:mod:`._compare`).
"""

from medmask.eval._baselines import (
    SHORTCUT_GRID,
    inpainting_loss,
    logistic_accuracy,
    logistic_probabilities,
    multilabel_logistic_probabilities,
    patch_means,
    shortcut_baseline,
    visible_mean_loss,
)
from medmask.eval._clip_overlay import (
    CELLS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUTS,
    JOINT_FINETUNE,
    LINEAR_PROBE,
    READINGS,
    ZERO_SHOT,
    OverlayResult,
    OverlaySettings,
    clip_inputs,
    evaluate_clip_overlay,
    grid_layout,
    readings,
    standardized_clip,
    summarize_clip_overlay,
    zero_shot_probabilities,
)
from medmask.eval._compare import PairedDifference, paired_bootstrap
from medmask.eval._grounding import (
    GroundingResult,
    GroundingSettings,
    evaluate_grounding,
    grounding_score,
    image_differences,
    summarize_grounding,
    true_label_probability,
)
from medmask.eval._protocols import (
    PROTOCOLS,
    list_protocols,
    protocol_needs,
    register_protocol,
    run_protocol,
)
from medmask.eval.classification import (
    accuracy,
    classification_metrics,
    macro_f1,
    per_class_auc,
    per_class_f1,
    roc_auc,
)
from medmask.eval.metrics import (
    boundary_iou,
    dice,
    hd95,
    iou,
    ppv,
    segmentation_metrics,
    segmentation_metrics_table,
    sensitivity,
    summarize_segmentation_table,
)

__all__ = [
    "INPUTS",
    "JOINT_FINETUNE",
    "LINEAR_PROBE",
    "ZERO_SHOT",
    "CELLS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OverlayResult",
    "OverlaySettings",
    "READINGS",
    "clip_inputs",
    "evaluate_clip_overlay",
    "readings",
    "grid_layout",
    "standardized_clip",
    "summarize_clip_overlay",
    "zero_shot_probabilities",
    "SHORTCUT_GRID",
    "visible_mean_loss",
    "shortcut_baseline",
    "patch_means",
    "paired_bootstrap",
    "logistic_probabilities",
    "multilabel_logistic_probabilities",
    "logistic_accuracy",
    "inpainting_loss",
    "GroundingResult",
    "GroundingSettings",
    "PROTOCOLS",
    "PairedDifference",
    "accuracy",
    "boundary_iou",
    "classification_metrics",
    "dice",
    "evaluate_grounding",
    "grounding_score",
    "image_differences",
    "hd95",
    "iou",
    "list_protocols",
    "macro_f1",
    "per_class_auc",
    "per_class_f1",
    "ppv",
    "protocol_needs",
    "register_protocol",
    "run_protocol",
    "roc_auc",
    "segmentation_metrics",
    "segmentation_metrics_table",
    "sensitivity",
    "summarize_grounding",
    "summarize_segmentation_table",
    "true_label_probability",
]

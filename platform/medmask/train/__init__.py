"""Ray Train: one epoch-loop skeleton, the public stages, and the studies that orchestrate them.

- Loops (plain ``train_loop_per_worker(config)`` functions on :func:`run_epochs`):
  :func:`pretrain_loop` (any registered learning method), :func:`finetune_loop` (linear
  probing / full fine-tuning through ``encode``), :func:`segment_loop` (U-Net segmentation).
- Stages, used by the studies and by :mod:`medmask.tune`: :func:`run_pretraining` (cached in
  the :class:`StageCache` by :func:`pretrain_settings`), :func:`run_finetuning`,
  :func:`finetune_cell` (the lr grid, per-image predictions), :func:`finetune_cells` (all
  the cells of one initialisation in one Ray Train run, :func:`finetune_cells_loop` on
  :func:`run_cells`), :func:`label_fraction_subset`,
  :func:`reconstruction_gallery`, :func:`reconstruction_baselines`,
  :func:`masking_statistics`.
- Orchestrators: :func:`run_mim_study` (pretrain -> fine-tune -> evaluate at every seed,
  with From Scratch, shortcut, Transfer and oracle controls and paired intervals) and
  :func:`run_ahm_study` (reconstruction net, RL policy, AHM
  pretraining, segmentation at several label fractions).
- Typed, frozen settings at the boundary (:class:`MimSettings`, :class:`AhmSettings`,
  :class:`PretrainSettings`, ...), built from plain mappings by :func:`settings_from_dict`
  (unknown keys fail there).
- The grounding study's classifiers, fitted in-process and cached (:func:`fitted_classifier`,
  :class:`PhantomData`, :class:`FitSettings`, :func:`load_classifier`): the random-mask MAE
  classifier and the two controls of the grounding score.
- The contour-overlay study's models (:func:`phantom_clip`: a tiny CLIP trained on phantoms,
  cached; :func:`grid_classifiers`: Table 2's LP and JFT models), in-process.
- :func:`build_trainer`, :class:`ScalingSettings`: the ``TorchTrainer`` (scaling,
  checkpoints, failure recovery); :func:`build_mask_strategy` loads an AHM policy.
"""

from medmask.train._ahm_study import run_ahm_study
from medmask.train._checkpoint import (
    StageCache,
    code_version,
    config_hash,
    load_checkpoint,
    save_checkpoint,
)
from medmask.train._clip_overlay import (
    FindingsClassifier,
    GridModels,
    HeadFitSettings,
    PhantomClipSettings,
    Selection,
    fit_cell,
    fit_findings_classifier,
    grid_classifiers,
    phantom_clip,
    positive_rows,
)
from medmask.train._finetune import (
    build_classifier,
    finetune_cells_loop,
    finetune_loop,
    predict,
)
from medmask.train._grounding import (
    CONTROL_VARIANTS,
    FitSettings,
    FittedClassifier,
    PhantomData,
    fit_classifier,
    fitted_classifier,
    load_classifier,
    torch_threads,
)
from medmask.train._loop import run_epochs
from medmask.train._loop_utils import quiet_data_progress
from medmask.train._masks import build_mask_strategy
from medmask.train._optim import (
    OptimizerConfig,
    build_optimizer,
    build_scheduler,
    parameter_groups,
)
from medmask.train._pretrain import pretrain_loop
from medmask.train._segment import build_segmenter, score_segmentation, segment_loop
from medmask.train._settings import (
    AhmSettings,
    AugmentSettings,
    BaselineSettings,
    ControlSettings,
    CropSettings,
    FinetuneRecipe,
    FinetuneSettings,
    HeadSettings,
    MaskingSettings,
    MimSettings,
    ModelSettings,
    PolicyBudgetSettings,
    PolicySettings,
    PretrainSettings,
    ProbeSettings,
    SegmentationSettings,
    StageSettings,
    TransferSettings,
    settings_from_dict,
)
from medmask.train._stages import (
    FinetuneCell,
    FinetuneOutcome,
    dataset_images,
    finetune_cell,
    finetune_cells,
    label_fraction_subset,
    load_reconstruction,
    masking_statistics,
    masks_patches,
    pretrain_settings,
    pretraining_summary,
    reconstruction_baselines,
    reconstruction_gallery,
    run_finetuning,
    run_policy_training,
    run_pretraining,
    run_segmentation,
    train_view,
    transfer_report,
)
from medmask.train._study import baseline_methods, results_table, run_mim_study
from medmask.train._trainer import ScalingSettings, build_trainer, steps_per_epoch

__all__ = [
    "AhmSettings",
    "PolicyBudgetSettings",
    "PolicySettings",
    "SegmentationSettings",
    "run_policy_training",
    "dataset_images",
    "run_segmentation",
    "masks_patches",
    "pretraining_summary",
    "FindingsClassifier",
    "HeadFitSettings",
    "PhantomClipSettings",
    "fit_cell",
    "fit_findings_classifier",
    "GridModels",
    "Selection",
    "positive_rows",
    "grid_classifiers",
    "phantom_clip",
    "parameter_groups",
    "results_table",
    "reconstruction_baselines",
    "masking_statistics",
    "finetune_cell",
    "finetune_cells",
    "FinetuneCell",
    "FinetuneOutcome",
    "FinetuneRecipe",
    "ControlSettings",
    "AugmentSettings",
    "BaselineSettings",
    "CONTROL_VARIANTS",
    "FitSettings",
    "FittedClassifier",
    "PhantomData",
    "CropSettings",
    "FinetuneSettings",
    "HeadSettings",
    "MaskingSettings",
    "MimSettings",
    "ModelSettings",
    "PretrainSettings",
    "ProbeSettings",
    "StageSettings",
    "TransferSettings",
    "OptimizerConfig",
    "ScalingSettings",
    "StageCache",
    "baseline_methods",
    "build_classifier",
    "build_mask_strategy",
    "build_optimizer",
    "build_scheduler",
    "build_segmenter",
    "build_trainer",
    "code_version",
    "config_hash",
    "finetune_cells_loop",
    "finetune_loop",
    "fit_classifier",
    "fitted_classifier",
    "label_fraction_subset",
    "load_checkpoint",
    "load_classifier",
    "load_reconstruction",
    "predict",
    "pretrain_loop",
    "pretrain_settings",
    "quiet_data_progress",
    "reconstruction_gallery",
    "run_ahm_study",
    "run_epochs",
    "run_finetuning",
    "run_mim_study",
    "run_pretraining",
    "save_checkpoint",
    "score_segmentation",
    "segment_loop",
    "settings_from_dict",
    "steps_per_epoch",
    "torch_threads",
    "train_view",
    "transfer_report",
]

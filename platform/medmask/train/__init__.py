"""Ray Train loops: masked-image-modeling pretraining, fine-tuning, and the MIM study.

- :func:`pretrain_loop`: the one pretraining loop for every model family and mask strategy.
- :func:`finetune_loop`: linear probing / full fine-tuning through ``encode``.
- :func:`build_trainer`: the ``TorchTrainer`` (scaling, checkpoints, failure recovery).
- :func:`run_mim_study`: pretrain -> fine-tune -> evaluate with the MLflow run tree.
- :func:`segment_loop`: end-to-end U-Net segmentation fine-tuning (AHM's downstream task).
- :func:`run_ahm_study`: the AHM pipeline (reconstruction net, RL policy, AHM pretraining,
  segmentation at several label fractions vs random masking and from scratch).
- :func:`build_mask_strategy`: a mask strategy from settings (loads an AHM policy checkpoint).
"""

from medmask.train._ahm_study import load_reconstruction, run_ahm_study
from medmask.train._checkpoint import PretrainCache, config_hash, load_checkpoint, save_checkpoint
from medmask.train._finetune import build_classifier, finetune_loop, predict
from medmask.train._masks import build_mask_strategy
from medmask.train._optim import OptimizerConfig, build_optimizer, build_scheduler
from medmask.train._pretrain import pretrain_loop
from medmask.train._segment import build_segmenter, score_segmentation, segment_loop
from medmask.train._study import run_mim_study
from medmask.train._trainer import ScalingSettings, build_trainer, steps_per_epoch

__all__ = [
    "OptimizerConfig",
    "PretrainCache",
    "ScalingSettings",
    "build_classifier",
    "build_mask_strategy",
    "build_segmenter",
    "build_optimizer",
    "build_scheduler",
    "build_trainer",
    "config_hash",
    "finetune_loop",
    "load_checkpoint",
    "load_reconstruction",
    "pretrain_loop",
    "predict",
    "run_ahm_study",
    "run_mim_study",
    "score_segmentation",
    "segment_loop",
    "save_checkpoint",
    "steps_per_epoch",
]

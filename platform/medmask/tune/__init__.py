"""Ray Tune sweep builders: masking-ratio, strategy, label-fraction and AHM-share studies.

Public API:

- :class:`SweepSpec` (what the Hydra ``sweep`` group says), :data:`SWEEP_PARAMS` (what a
  sweep may vary), :func:`param_space`, :func:`trial_settings`, :func:`trial_name`.
- :func:`run_sweep`: a ``Tuner`` whose trials each fit the pretraining and fine-tuning
  ``TorchTrainer`` s (:func:`sweep_trial`, Ray's Tune report callback), resumable with
  ``Tuner.restore``, with the MLflow run tree study -> trial -> stage and a summary table and
  plot on the study run.
- :func:`prepare_policies`: the AHM policies a sweep's AHM trials lack, trained (cached) in
  the driver before the trials, one per seed's random-mask reconstruction network.
- :func:`summary_table`, :func:`pivot_text`, :func:`metric_plot`: the end-of-sweep comparison.
- :func:`run_clip_overlay_sweep` (:class:`ClipSweepSettings`): ``sweep=clip_overlay``,
  Table 2 of the contour-overlay protocol, in-process trials after the driver's phantom CLIP.
"""

from medmask.tune._clip_overlay import (
    ClipSweepResult,
    ClipSweepSettings,
    cell_points,
    run_clip_overlay_sweep,
)
from medmask.tune._policies import policy_reconstructions, prepare_policies
from medmask.tune._space import (
    SWEEP_PARAMS,
    SchedulerSpec,
    SweepSpec,
    grid_points,
    needs_policy,
    param_space,
    policy_reconstruction,
    policy_slot,
    trial_name,
    trial_settings,
    trial_values,
    validate_sweep,
)
from medmask.tune._summary import metric_plot, pivot_text, summary_table
from medmask.tune._sweep import (
    Concurrency,
    SweepResult,
    auto_max_concurrent_trials,
    build_scheduler,
    run_sweep,
    trial_table,
)
from medmask.tune._trainable import StageReportCallback, pretrain_lock, sweep_trial

__all__ = [
    "SWEEP_PARAMS",
    "ClipSweepResult",
    "ClipSweepSettings",
    "Concurrency",
    "SchedulerSpec",
    "StageReportCallback",
    "SweepResult",
    "SweepSpec",
    "auto_max_concurrent_trials",
    "build_scheduler",
    "cell_points",
    "grid_points",
    "metric_plot",
    "needs_policy",
    "param_space",
    "pivot_text",
    "policy_reconstruction",
    "policy_reconstructions",
    "policy_slot",
    "prepare_policies",
    "pretrain_lock",
    "run_clip_overlay_sweep",
    "run_sweep",
    "summary_table",
    "sweep_trial",
    "trial_name",
    "trial_settings",
    "trial_table",
    "trial_values",
    "validate_sweep",
]

"""Sweeps: a Ray Tune study over the MIM pipeline, compared in the MLflow UI.

    python experiments/sweep.py                                  # sweep=masking_ratio (quick)
    python experiments/sweep.py sweep.space.ratio=[0.15,0.3,0.45,0.6,0.75,0.9]   # RGMIM Table 3
    python experiments/sweep.py sweep=label_fraction                              # RGMIM Table 2
    python experiments/sweep.py sweep=ahm_share_one_policy sweep.strategies.ahm.policy_checkpoint=P
    python experiments/sweep.py sweep=grounding       # random / RGMIM / AHM encoders x 3 seeds
    python experiments/sweep.py sweep=clip_overlay    # Table 2 of the contour overlays (CLIP)
    python experiments/sweep.py tracking=server tracking.uri=http://127.0.0.1:5000 cluster=ray

Each trial fits the pretraining and fine-tuning TorchTrainers (medmask.tune); an interrupted
sweep continues when the same command runs again (Tuner.restore, finished trials kept). AHM
trials without sweep.strategies.ahm.policy_checkpoint get a policy trained (cached) before the
trials with the `policy` settings (configs/rl, overridden in configs/sweep.yaml).
sweep=clip_overlay runs in-process trials (one zero-shot, LP / JFT x original / overlay
training x seeds) after the driver has trained or reused the phantom CLIP
(medmask.tune.run_clip_overlay_sweep).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import init_ray, log, make_tracker, mlflow_summary, to_dict  # noqa: E402
from _mim import mim_settings  # noqa: E402

from medmask.eval import OverlaySettings  # noqa: E402
from medmask.train import (  # noqa: E402
    HeadFitSettings,
    MimSettings,
    PhantomClipSettings,
    PolicySettings,
    ScalingSettings,
    settings_from_dict,
)
from medmask.tune import (  # noqa: E402
    ClipSweepSettings,
    Concurrency,
    SweepSpec,
    auto_max_concurrent_trials,
    run_clip_overlay_sweep,
    run_sweep,
    validate_sweep,
)


def sweep_settings(cfg: DictConfig) -> tuple[MimSettings, Any]:
    """The base MIM settings and the :class:`SweepSpec`, validated before any compute."""

    if cfg.data.name != "phantom":
        raise ValueError(f"sweeps run on data=phantom for now, got data={cfg.data.name}")
    settings = mim_settings(cfg)
    spec = SweepSpec.from_dict(to_dict(cfg.sweep))
    validate_sweep(settings, spec, train_policies=policy_settings(cfg) is not None)
    return settings, spec


def policy_settings(cfg: DictConfig) -> PolicySettings | None:
    """The AHM policy the sweep trains for AHM trials without a ``policy_checkpoint``
    (``policy``: configs/rl with the sweep's budget); None where the config has none."""
    if cfg.get("policy") is None:
        return None
    return settings_from_dict(PolicySettings, to_dict(cfg.policy), "policy")


def concurrency(cluster: DictConfig, scaling: ScalingSettings) -> Any:
    """Trials at once from the cluster group (null: as many as the CPUs allow)."""
    import ray

    limit = cluster.get("max_concurrent_trials")
    if limit is None:
        limit = auto_max_concurrent_trials(ray.cluster_resources().get("CPU", 1), scaling)
    resources = cluster.get("trial_resources")
    return Concurrency(int(limit), to_dict(resources) if resources is not None else None)


def shared_threads(settings: MimSettings, trials_at_once: int) -> MimSettings:
    """Trials train at the same time: each worker's torch threads (``cluster.torch_threads``)
    are its share of the cores among the concurrent trials."""
    threads = settings.scaling.torch_threads
    if threads is None:
        return settings
    scaling = dataclasses.replace(settings.scaling,
                                  torch_threads=max(1, threads // max(1, trials_at_once)))
    return dataclasses.replace(settings, scaling=scaling)


def clip_sweep_settings(cfg: DictConfig) -> ClipSweepSettings:
    """``sweep=clip_overlay``'s settings (the same groups as experiments/clip_overlay.py),
    validated before any compute."""
    from clip_overlay import data_settings

    g = cfg.clip_overlay
    cpus = float(g.get("trial_cpus", 1))
    limit = cfg.cluster.get("max_concurrent_trials")
    return ClipSweepSettings(
        name=str(cfg.sweep.name),
        overlay=OverlaySettings.from_params(**to_dict(cfg.eval.params)),
        fit=HeadFitSettings(**{**to_dict(g.fit), "threads": max(1, int(cpus))}),
        data=data_settings(cfg), seeds=tuple(int(s) for s in g.seeds),
        clip_folder=str(g.clip_folder) if g.clip_folder else None,
        phantom_clip=PhantomClipSettings(**to_dict(g.phantom_clip), seed=int(cfg.seed)),
        cache_dir=str(cfg.cache_dir), batch_size=int(g.batch_size), trial_cpus=cpus,
        max_concurrent_trials=int(limit) if limit is not None else None)


def run_clip(cfg: DictConfig) -> Any:
    """``sweep=clip_overlay``: Table 2 as one Tune study (medmask.tune)."""
    settings = clip_sweep_settings(cfg)
    tracker = make_tracker(cfg.tracking)
    init_ray(cfg.cluster, verbose=bool(cfg.get("verbose", False)))
    stopper = None
    if cfg.sweep.get("time_budget_s"):
        from ray.tune.stopper import TimeoutStopper

        stopper = TimeoutStopper(float(cfg.sweep.time_budget_s))
    start = time.perf_counter()
    result = run_clip_overlay_sweep(settings, tracker, storage_dir=Path(cfg.sweep_dir),
                                    resume=str(cfg.sweep.resume), stopper=stopper)
    print(f"wall time {time.perf_counter() - start:.0f} s")
    print(mlflow_summary(tracker, f"study run {result.study_run_id}; tables and plot also in "
                                  f"{result.path}"))
    return result


def run(cfg: DictConfig) -> Any:

    if cfg.sweep.get("trial") == "clip_overlay":
        return run_clip(cfg)
    settings, spec = sweep_settings(cfg)
    tracker = make_tracker(cfg.tracking)  # fails fast (or falls back) before any compute
    # quiet as the other entry points: workers' and RLlib's chatter to logs (verbose=true)
    init_ray(cfg.cluster, verbose=bool(cfg.get("verbose", False)))
    stopper = None
    if cfg.sweep.get("time_budget_s"):
        from ray.tune.stopper import TimeoutStopper

        stopper = TimeoutStopper(float(cfg.sweep.time_budget_s))
    parallel = concurrency(cfg.cluster, settings.scaling)
    settings = shared_threads(settings, parallel.max_concurrent_trials)
    log.info("sweep %s: up to %d trial(s) at once", spec.name, parallel.max_concurrent_trials)
    result = run_sweep(
        settings, spec, tracker, storage_dir=Path(cfg.sweep_dir), concurrency=parallel,
        resume=str(cfg.sweep.resume), stopper=stopper,
        log_checkpoints=bool(cfg.sweep.log_checkpoints), policy=policy_settings(cfg),
    )
    where = f" (tracking server {tracker.unreachable_uri} was unreachable)" \
        if tracker.unreachable_uri else ""
    print(mlflow_summary(tracker, f"study run {result.study_run_id}{where}; tables and plot "
                                  f"also in {result.path}"))
    return result


@hydra.main(config_path="../configs", config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()

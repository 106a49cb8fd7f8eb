"""Wiring shared by the Hydra entry points: Ray, tracking, config conversion."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("medmask")


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict (what gets logged as params)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def init_ray(cluster: DictConfig) -> None:
    """Connect to the cluster (``address``, or ``RAY_ADDRESS`` under ``ray job submit``) or
    start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=cluster.get("num_cpus"), dashboard_host="127.0.0.1")
    log.info("Ray resources: %s", ray.cluster_resources())


def make_tracker(tracking: DictConfig) -> Any:
    """The MLflow run-tree helper, failing fast before compute if the server is down."""
    from medmask.tracking import Tracker

    tracker = Tracker(
        tracking.get("uri"),
        tracking.get("experiment", "medmask"),
        fallback_local=bool(tracking.get("fallback_local", False)),
    )
    log.info("MLflow: %s (experiment %r)", tracker.uri, tracker.experiment)
    return tracker


def scaling_settings(cluster: DictConfig) -> dict[str, Any]:
    """The Ray Train scaling of the ``cluster`` group (``medmask.train.ScalingSettings``)."""
    return {"num_workers": int(cluster.num_workers), "use_gpu": bool(cluster.use_gpu),
            "resources_per_worker": to_dict(cluster.resources_per_worker),
            "max_failures": int(cluster.max_failures)}

"""Wiring shared by the Hydra entry points: Ray, tracking, config conversion."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("medmask")

ROOT = Path(__file__).resolve().parents[1]
# The runtime environment that ships platform/medmask and envs/ to a cluster's nodes (README).
RUNTIME_ENV_FILE = ROOT / "configs" / "runtime_env.yaml"


def use_this_clone() -> None:
    """Import this clone's sources, here and in every local Ray worker.

    ``make`` exports ``PYTHONPATH=<clone>/platform:<clone>``; a plain ``python
    experiments/x.py`` gets the same here: the paths go first on ``sys.path`` and into
    ``PYTHONPATH``, which the raylet and its workers inherit from the driver (Ray passes its
    workers only the script's directory and the working directory).
    """
    paths = [str(ROOT / "platform"), str(ROOT)]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *(p for p in current if p not in paths)])


use_this_clone()  # before the first medmask import: a plain python experiments/x.py works

from medmask.console import (  # noqa: E402
    LOG_FILE_ENV,
    VERBOSE_ENV,
    rllib_log_file,
    route_rllib_chatter,
)
from medmask.tracking import Tracker  # noqa: E402


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict (what gets logged as params)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def init_ray(cluster: DictConfig, verbose: bool = True, attempts: int = 2) -> None:
    """Connect to the cluster (``address``, or ``RAY_ADDRESS`` under ``ray job submit``) or
    start a local Ray.

    ``verbose=False`` keeps the workers' output (Ray Train's and Ray Data's per-report lines)
    in Ray's session log files instead of the console, where each stage shows a progress bar
    (:class:`medmask.train._trainer.EpochProgress`), and routes RLlib's chatter to
    ``outputs/logs/rllib.log`` in the driver and in every worker (``medmask.console``).
    A local start that times out (a raylet or the GCS too slow on a loaded machine) is
    retried ``attempts`` times in all.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ[LOG_FILE_ENV] = str(rllib_log_file())  # workers write to the same file
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    hook = None if verbose else {"worker_process_setup_hook":
                                 "medmask.console.quiet_worker_setup"}
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, log_to_driver=verbose, runtime_env=hook)
        if not ray.get_runtime_context().runtime_env.get("py_modules"):
            log.warning("this job ships no py_modules: Ray workers import medmask from their "
                        "node's own Python path; on nodes without the repository submit with "
                        "--runtime-env %s", RUNTIME_ENV_FILE.relative_to(ROOT))
    else:
        if not verbose:  # Ray 2.60's notice that a local start turned token auth on
            logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        for attempt in range(1, attempts + 1):
            try:
                context = ray.init(num_cpus=cluster.get("num_cpus"),
                                   dashboard_host="127.0.0.1", runtime_env=hook,
                                   log_to_driver=verbose,  # its INFO lines: verbose only
                                   logging_level=logging.INFO if verbose else logging.WARNING)
                break
            except Exception as error:  # Ray raises a bare Exception on a startup timeout
                if "timed out during startup" not in str(error) or attempt == attempts:
                    raise
                log.warning("Ray did not start in time (%s); retrying", error)
                ray.shutdown()
    import ray.data  # noqa: F401  (Ray's libraries set up their console handlers on import)
    import ray.train  # noqa: F401

    path = route_rllib_chatter(verbose)
    session = context.address_info.get("session_dir") or "the head node's session folder"
    log.info("Ray resources: %s%s", ray.cluster_resources(),
             "" if verbose else f"; workers' logs in {Path(session) / 'logs'}, RLlib's log lines "
                                f"in {path} (verbose=true shows both on the console)")


def mlflow_summary(tracker: Any, detail: str = "") -> str:
    """The closing lines of an experiment: where its runs are and how to look at them (the
    link opens the MLflow UI on its model-training view; see ``Tracker.ui_link``)."""
    lines = [f"MLflow: {tracker.uri} (experiment {tracker.experiment!r}"
             + (f", {detail}" if detail else "") + ")"]
    if not tracker.uri.startswith(("http://", "https://")):
        lines.append(f"  {Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri "
                     f"{tracker.uri} --host 127.0.0.1 --port 5000")
    lines.append(f"  then open {tracker.ui_link()}")
    return "\n".join(lines)


def make_tracker(tracking: DictConfig) -> Any:
    """The MLflow run-tree helper, failing fast before compute if the server is down."""

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
            "max_failures": int(cluster.max_failures),
            "channels_last": cluster.get("channels_last"),
            "compile": bool(cluster.get("compile", False)),
            "torch_threads": torch_threads(cluster)}


def torch_threads(cluster: DictConfig) -> int | None:
    """``cluster.torch_threads``: null (Ray's default: a Train worker runs as many torch
    threads as the CPUs it reserves), an int, or ``auto``: on a local Ray (address null and no
    ``RAY_ADDRESS``, i.e. not a ``ray job submit`` job), each worker's share of the machine's
    cores (``num_cpus`` or all of them): the stages of a study train one at a time, so a 1-CPU
    worker would leave the other cores idle; on a cluster Ray's default (its nodes' cores are
    not the driver's)."""
    value = cluster.get("torch_threads")
    if value is None:
        return None
    if value == "auto":
        if cluster.get("address") is not None or os.environ.get("RAY_ADDRESS"):
            return None
        cores = int(cluster.get("num_cpus") or len(os.sched_getaffinity(0)))
        return max(1, cores // max(1, int(cluster.num_workers)))
    if isinstance(value, int) and value >= 1:
        return value
    raise ValueError(f"cluster.torch_threads must be null, auto or an int >= 1, got {value!r}")

"""A quiet console: RLlib's chatter goes to a log file (a leaf module: logging only).

Light to import on purpose (no Ray, no torch, nothing of medmask): Ray workers run
:func:`quiet_worker_setup` as their ``worker_process_setup_hook``, so EnvRunners and
learners stay quiet too.

Two deprecation warnings are raised inside RLlib 2.60 itself, on every run, whatever the
caller does (found where each is raised):

- ``ray/rllib/algorithms/appo/appo.py``, ``APPOConfig.get_default_rl_module_spec``, imports the
  deprecated alias ``ray.rllib.algorithms.appo.torch.appo_torch_rl_module.APPOTorchRLModule``
  (message: "`...APPOTorchRLModule` has been deprecated. Use `...DefaultAPPOTorchRLModule`
  instead.");
- ``ray/rllib/core/rl_module/rl_module.py``, ``RLModule.__init__``, always builds the
  deprecated ``RLModuleConfig`` (message: "`RLModule(config=[RLModuleConfig object])` has been
  deprecated."), although medmask builds its module with ``observation_space=``,
  ``action_space=`` and ``model_config=`` (the new form).

Ray emits them through the ``ray._common.deprecation`` logger (``logger.warning``, not the
``warnings`` module), so :func:`route_rllib_chatter` installs a logging filter that names
these messages and sends them to the log file instead of the console, plus a ``warnings``
filter for the same messages should a Ray version raise them as warnings. With
``verbose=True`` nothing is filtered. Everything else RLlib and Ray Tune log at INFO/WARNING
(per-report lines, "You are running APPO on the new API stack", "Install gputil") goes to
the same file; errors still reach the console.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

RLLIB_INTERNAL_DEPRECATIONS = (
    "`ray.rllib.algorithms.appo.torch.appo_torch_rl_module.APPOTorchRLModule` has been "
    "deprecated",
    "`RLModule(config=[RLModuleConfig object])` has been deprecated",
)
CHATTY_LOGGERS = ("ray.rllib", "ray.tune")  # their INFO/WARNING records go to the file
LOG_FILE_ENV = "MEDMASK_RLLIB_LOG"  # where the chatter goes (default: outputs/logs/rllib.log)
VERBOSE_ENV = "MEDMASK_VERBOSE"  # "1": route nothing (workers read it; verbose=true sets it)

_installed: dict[str, logging.Handler] = {}


def rllib_log_file() -> Path:
    """``$MEDMASK_RLLIB_LOG``, else ``outputs/logs/rllib.log`` under the working directory."""
    return Path(os.environ.get(LOG_FILE_ENV, Path("outputs") / "logs" / "rllib.log")).resolve()


class ChatterFilter(logging.Filter):
    """Sends RLlib's chatter to ``handler`` and keeps it off the handler it is attached to.

    Chatter: the named RLlib-internal deprecations (any level), and records below ERROR from
    the ``ray.rllib`` and ``ray.tune`` loggers. Anything else passes untouched.
    """

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def is_chatter(self, record: logging.LogRecord) -> bool:
        if any(m in record.getMessage() for m in RLLIB_INTERNAL_DEPRECATIONS):
            return True
        return record.levelno < logging.ERROR and record.name.startswith(CHATTY_LOGGERS)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.is_chatter(record):
            return True
        if not getattr(record, "_medmask_logged", False):  # once, whichever handler sees it
            record._medmask_logged = True
            self.handler.handle(record)
        return False


def quiet_worker_setup() -> None:
    """Ray's ``worker_process_setup_hook``: route this worker's chatter (same file)."""
    route_rllib_chatter()


def route_rllib_chatter(verbose: bool = False, log_file: str | Path | None = None) -> Path:
    """Route RLlib's deprecations and INFO/WARNING chatter to ``log_file``; returns its path.

    Attaches a :class:`ChatterFilter` to the console handlers Ray and the root logger have
    now (call it after logging is configured, e.g. after ``ray.init``) and to the loggers
    that emit. Idempotent per process; ``verbose=True`` changes nothing. The file is created
    only when the first record arrives.
    """
    path = Path(log_file).resolve() if log_file else rllib_log_file()
    verbose = verbose or os.environ.get(VERBOSE_ENV) == "1"
    if verbose or str(path) in _installed:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _installed[str(path)] = handler
    chatter = ChatterFilter(handler)
    for name in ("", "ray", *CHATTY_LOGGERS, "ray._common.deprecation"):
        logger = logging.getLogger(name)
        logger.addFilter(chatter)  # records logged on these loggers themselves
        for console in logger.handlers:  # records propagated from their children
            console.addFilter(chatter)
    for message in RLLIB_INTERNAL_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=f".*{message}.*")
    return path

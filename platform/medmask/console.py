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
the same file, and so do Ray Train's and Ray Data's (``ray.train``, ``ray.data``); errors
still reach the console.
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
# Their INFO/WARNING records go to the file (per-report lines, resource requests, hints).
CHATTY_LOGGERS = ("ray.rllib", "ray.tune", "ray.train", "ray.data")
LOG_FILE_ENV = "MEDMASK_RLLIB_LOG"  # where the chatter goes (default: outputs/logs/rllib.log)
VERBOSE_ENV = "MEDMASK_VERBOSE"  # "1": route nothing (workers read it; verbose=true sets it)

def rllib_log_file() -> Path:
    """``$MEDMASK_RLLIB_LOG``, else ``outputs/logs/rllib.log`` under the working directory."""
    return Path(os.environ.get(LOG_FILE_ENV, Path("outputs") / "logs" / "rllib.log")).resolve()


class ChatterFilter(logging.Filter):
    """Sends RLlib's chatter to ``handler`` and keeps it off the handler it is attached to.

    Chatter: the named RLlib-internal deprecations (any level), and records below ERROR from
    the :data:`CHATTY_LOGGERS`. Anything else passes untouched.
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


_installed: dict[str, ChatterFilter] = {}  # log file -> its filter


def quiet_worker_setup() -> None:
    """Ray's ``worker_process_setup_hook``: route this worker's chatter (same file)."""
    route_rllib_chatter()


def route_rllib_chatter(verbose: bool = False, log_file: str | Path | None = None) -> Path:
    """Route RLlib's deprecations and INFO/WARNING chatter to ``log_file``; returns its path.

    Attaches one :class:`ChatterFilter` to the console handlers that Ray, its libraries and
    the root logger have now, and to the loggers that emit. Ray's libraries add their own
    handlers when first imported, so call it again after importing one (idempotent: a
    handler gets the filter once). ``verbose=True`` (or ``MEDMASK_VERBOSE=1``) changes
    nothing. The file is created only when the first record arrives.
    """
    path = Path(log_file).resolve() if log_file else rllib_log_file()
    if verbose or os.environ.get(VERBOSE_ENV) == "1":
        return path
    if str(path) not in _installed:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, delay=True)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _installed[str(path)] = ChatterFilter(handler)
        for message in RLLIB_INTERNAL_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=f".*{message}.*")
    chatter = _installed[str(path)]
    for name in ("", "ray", *CHATTY_LOGGERS, "ray._common.deprecation"):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):  # its own records; propagated ones
            if chatter not in target.filters:
                target.addFilter(chatter)
    return path

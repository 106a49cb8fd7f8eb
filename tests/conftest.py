"""Shared fixtures: one local Ray session for the whole test run, offline hubs, temp MLflow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never reach a model hub from the tests (there is no internet on CI either).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Quiet, small Ray: no usage stats prompt, no log deduplication surprises.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray with 2 CPUs, started once for the session and shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    """A fresh local sqlite MLflow store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def pytest_configure(config: pytest.Config) -> None:
    # registered here, not in pyproject.toml (whose hash keys the cached venv)
    config.addinivalue_line(
        "markers", "study: a whole study through Ray Tune (minutes): make test-studies; "
                   "not in make test")

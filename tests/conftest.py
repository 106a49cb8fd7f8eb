"""Shared fixtures: one local Ray session for the whole test run, offline hubs, temp MLflow."""

from __future__ import annotations

import os
import shutil
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
        for attempt in range(2):  # Ray gives its raylet a fixed 30 s: a loaded machine retries
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                break
            except Exception as error:  # Ray raises a bare Exception here
                if "timed out during startup" not in str(error) or attempt:
                    raise
                ray.shutdown()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty sqlite MLflow store with MLflow's schema, created once for the session.

    Creating a store runs MLflow's database migrations: 2-10 s each, paid by every test that
    starts a fresh store. A copy of this file is the same empty store (the Default experiment
    only), ready at once.
    """
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates the schema
    return path


def fresh_store(template: Path, path: Path) -> str:
    """A fresh empty sqlite MLflow store at ``path`` (a copy of the template); its URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def mlflow_uri(tmp_path: Path, mlflow_template: Path) -> str:
    """A fresh local sqlite MLflow store for one test (a copy of the session's template)."""
    return fresh_store(mlflow_template, tmp_path / "mlflow.db")


def pytest_configure(config: pytest.Config) -> None:
    # registered here, not in pyproject.toml (whose hash keys the cached venv)
    config.addinivalue_line(
        "markers", "study: a whole study through Ray Tune (minutes): make test-studies; "
                   "not in make test")

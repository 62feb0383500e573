"""Session fixtures: the real stack (embedded servers unless PMLS_* URLs are set), on free ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pmls.settings import Settings
from pmls.stack import Stack, free_port

PORT_VARS = (
    "PMLS_API_PORT",
    "PMLS_TEMPORAL_PORT",
    "PMLS_TEMPORAL_UI_PORT",
    "PMLS_POSTGRES_PORT",
    "PMLS_REDIS_PORT",
    "PMLS_MLFLOW_PORT",
)


def stack_home() -> Path:
    """Not under pytest's basetemp: pytest resets it to 0700, and the embedded PostgreSQL runs as another
    user when we are root, so a restart mid-session would no longer reach its data directory."""
    return Path(tempfile.mkdtemp(prefix="pmls-test-"))


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    home = stack_home()
    os.environ["PMLS_HOME"] = str(home)
    for var in PORT_VARS:
        os.environ.setdefault(var, str(free_port()))
    running = Stack(Settings()).start()
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return stack.settings


@pytest.fixture(scope="session")
def api(settings: Settings) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=settings.api.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pmls.ml.demo_data import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("data") / "churn.parquet", days=540, rows_per_day=12)


@pytest.fixture(scope="session")
def demo_request(demo_data: Path) -> Callable[..., dict]:
    from pmls.ml.demo_data import DEMO_PERIODS

    def build(job_id: str, **overrides) -> dict:
        body = {
            "training_id": job_id,
            "model_type": "LIGHTGBM",
            "model_name": "churn_test",
            "dataset_config": {
                "source": str(demo_data),
                "target": "churned",
                "timestamp_column": "event_time",
                "entity_column": "customer_id",
                **DEMO_PERIODS,
            },
            "hyperparameter_config": {"optimization_method": "none", "optimization_trials": 0},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(body.get(key), dict):
                body[key] = {**body[key], **value}
            else:
                body[key] = value
        return body

    return build

"""Session fixtures: the real stack (embedded servers unless PMLS_* URLs are set), on free ports."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pmls.settings import PORT_VARS, Settings
from pmls.stack import Stack, free_port


def stack_home() -> Path:
    """Not under pytest's basetemp: pytest resets it to 0700, and the embedded PostgreSQL runs as another
    user when we are root, so a restart mid-session would no longer reach its data directory."""
    return Path(tempfile.mkdtemp(prefix="pmls-test-"))


@dataclass(frozen=True)
class Credentials:
    """What the test stack's API accepts besides the local admin token: two operator tokens and JWTs signed by
    a key pair made here, whose public half is the JWKS file the API reads (no network)."""

    reader: str  # scope read
    trainer: str  # scopes read, train
    private_key: Any
    issuer: str = "https://idp.pmls.test"
    audience: str = "pmls-api"

    def jwt(
        self, subject: str, scope: str, *, seconds: int = 300, audience: str | None = None, key=None
    ) -> str:
        import jwt

        now = int(time.time())
        claims = {"sub": subject, "scope": scope, "iss": self.issuer, "aud": audience or self.audience}
        claims |= {"iat": now, "exp": now + seconds}
        return jwt.encode(claims, key or self.private_key, algorithm="RS256", headers={"kid": "test-key"})


def _credentials(folder: Path) -> Credentials:
    import json

    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    from pmls.auth import new_token, token_entry

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key())) | {
        "kid": "test-key",
        "alg": "RS256",
        "use": "sig",
    }
    (folder / "jwks.json").write_text(json.dumps({"keys": [public]}))
    creds = Credentials(reader=new_token(), trainer=new_token(), private_key=key)
    os.environ["PMLS_API_TOKENS"] = ",".join(
        [
            token_entry("reader", frozenset({"read"}), creds.reader),
            token_entry("trainer", frozenset({"read", "train"}), creds.trainer),
        ]
    )
    os.environ["PMLS_JWT_JWKS"] = str(folder / "jwks.json")
    os.environ["PMLS_JWT_ISSUER"] = creds.issuer
    os.environ["PMLS_JWT_AUDIENCE"] = creds.audience
    return creds


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return _credentials(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, credentials: Credentials) -> Iterator[Stack]:
    home = stack_home()
    os.environ["PMLS_HOME"] = str(home)
    os.environ.pop("PMLS_AUTH", None)  # the suite runs with authentication on, as a user's stack does
    # The tests' data sets are written under pytest's temporary folders: those are the data roots.
    os.environ["PMLS_DATA_ROOTS"] = f"{home / 'data'},{tmp_path_factory.getbasetemp()}"
    for var in PORT_VARS:
        os.environ.setdefault(var, str(free_port()))
    # One named database connection for the database-source tests: the stack's own server, as an operator names one.
    os.environ["PMLS_CONNECTIONS"] = json.dumps({"warehouse": Settings().database.url})
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
    from pmls.auth import api_headers

    # The local admin token `pmls up` writes, as the CLI sends it.
    with httpx.Client(base_url=settings.api.base_url, timeout=60, headers=api_headers(settings)) as client:
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


# The fast layer (`make test-fast`, under two minutes on two cores): the contracts and layout rules, the stores,
# workflow replay and logic, and one real job through every stage on the demo data (the stack starts once).
# A test module or test listed here is marked `fast`; everything else runs in `make test` only.
FAST = (
    "tests/test_layers.py",
    "tests/contracts/",
    "tests/storage/",
    "tests/stack/",
    "tests/workflows/",
    "tests/api/test_training_lifecycle.py",
    "tests/api/test_bad_input.py::test_invalid_request_is_422_naming_the_field",
    "tests/api/test_bad_input.py::test_missing_body_fields_are_named",
    "tests/e2e/test_tuning.py::test_search_runs_exactly_the_requested_trials_and_records_each",
    "tests/e2e/test_cancel.py::test_cancel_through_the_api_stops_training",
    "tests/e2e/test_cancel.py::test_a_run_terminated_outside_the_service_is_reconciled",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(FAST):
            item.add_marker(pytest.mark.fast)

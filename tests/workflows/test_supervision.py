"""The activity supervisor (activities.supervision) on the real Temporal server: a test worker on a queue of its
own runs small activities under it (and, to show what it changes, without it).

* a quiet activity longer than its heartbeat timeout is kept alive (without the supervisor, it times out);
* connection errors are waited out inside the attempt, for as long as the outage budget, then fail for good;
* bad input and deterministic failures are never retried; other errors are, as the policy allows;
* the classification reads the whole chain of the errors our libraries raise.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeout
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.supervision import Supervisor, classify
from pmls.contracts.activities import FailureKind
from pmls.ml.errors import DataError

BUDGET = 4.0  # seconds of outage the test worker waits out
CALLS: Counter = Counter()
LOCK = threading.Lock()


def _count(name: str) -> int:
    with LOCK:
        CALLS[name] += 1
        return CALLS[name]


@activity.defn
def quiet(seconds: float) -> str:
    """Works longer than its heartbeat timeout and never heartbeats itself (like a long read)."""
    time.sleep(seconds)
    return f"attempt {activity.info().attempt}"


@activity.defn
def flaky(key: str) -> str:
    """Refused twice, then answers (a database restarting)."""
    if _count(key) <= 2:
        raise ConnectionRefusedError(111, "Connection refused")
    return f"call {CALLS[key]}, attempt {activity.info().attempt}"


@activity.defn
def down(key: str) -> str:
    _count(key)
    raise ConnectionRefusedError(111, "Connection refused")


@activity.defn
def bad_input(key: str) -> str:
    _count(key)
    raise DataError("dataset_config.target", "column 'y' not found")


@activity.defn
def bug(key: str) -> str:
    _count(key)
    raise TypeError("unsupported operand type(s)")


@activity.defn
def unknown(key: str) -> str:
    _count(key)
    raise RuntimeError("something odd")


@workflow.defn(sandboxed=False)
class Call:
    @workflow.run
    async def run(self, name: str, arg: object, heartbeat_s: float, attempts: int) -> str:
        return await workflow.execute_activity(
            name,
            arg,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=heartbeat_s),
            retry_policy=RetryPolicy(
                maximum_attempts=attempts, initial_interval=timedelta(milliseconds=100), backoff_coefficient=1
            ),
        )


def _run(settings, name: str, arg: object, *, heartbeat_s: float = 30, attempts: int = 1, supervised=True):
    from pmls.temporal import connect_temporal

    queue = f"supervision-{uuid.uuid4().hex[:8]}"

    async def main():
        client = await connect_temporal(settings)
        with ThreadPoolExecutor(max_workers=2) as executor:
            async with Worker(
                client,
                task_queue=queue,
                workflows=[Call],
                activities=[quiet, flaky, down, bad_input, bug, unknown],
                activity_executor=executor,
                interceptors=[Supervisor(BUDGET)] if supervised else [],
                workflow_runner=UnsandboxedWorkflowRunner(),
            ):
                return await client.execute_workflow(
                    Call.run,
                    args=[name, arg, heartbeat_s, attempts],
                    id=f"{queue}-{name}",
                    task_queue=queue,
                    execution_timeout=timedelta(seconds=90),
                )

    return asyncio.run(main())


def _failure(settings, name: str, arg: object, **kwargs) -> ApplicationError | BaseException:
    with pytest.raises(WorkflowFailureError) as caught:
        _run(settings, name, arg, **kwargs)
    cause = caught.value.cause
    assert isinstance(cause, ActivityError)
    return cause.cause


def test_a_quiet_activity_longer_than_its_heartbeat_timeout_is_kept_alive(stack, settings):
    # 5 s of silent work under a 2 s heartbeat timeout, one attempt allowed: the supervisor's beats carry it.
    assert _run(settings, "quiet", 5.0, heartbeat_s=2) == "attempt 1"
    # The same without the supervisor: Temporal declares the worker dead after 2 s.
    failure = _failure(settings, "quiet", 5.0, heartbeat_s=2, supervised=False)
    assert isinstance(failure, TemporalTimeout)


def test_connection_errors_are_waited_out_inside_the_attempt(stack, settings):
    key = uuid.uuid4().hex
    started = time.monotonic()
    assert _run(settings, "flaky", key) == "call 3, attempt 1"  # one Temporal attempt, three calls
    assert time.monotonic() - started >= 3.0  # backoff 1 s, then 2 s


def test_an_outage_longer_than_the_budget_fails_for_good_and_says_so(stack, settings):
    key = uuid.uuid4().hex
    failure = _failure(settings, "down", key, attempts=5)
    assert isinstance(failure, ApplicationError)
    assert failure.type == FailureKind.UNAVAILABLE and failure.non_retryable
    assert "outage budget is 4 s" in failure.message and "PMLS_OUTAGE_BUDGET_SECONDS" in failure.message
    assert CALLS[key] == 3  # tried at 0, 1 and 3 s; the next wait (4 s) would pass the budget


@pytest.mark.parametrize(
    ("name", "kind"), [("bad_input", "DataError"), ("bug", FailureKind.DETERMINISTIC.value)]
)
def test_bad_input_and_deterministic_failures_are_never_retried(stack, settings, name, kind):
    key = uuid.uuid4().hex
    failure = _failure(settings, name, key, attempts=5)
    assert isinstance(failure, ApplicationError)
    assert failure.type == kind and failure.non_retryable
    assert CALLS[key] == 1


def test_other_failures_are_retried_as_the_policy_allows(stack, settings):
    key = uuid.uuid4().hex
    failure = _failure(settings, "unknown", key, attempts=3)
    assert isinstance(failure, ApplicationError)
    assert failure.type == FailureKind.FAILED and "RuntimeError: something odd" in failure.message
    assert CALLS[key] == 3


def _raised(outer: type[BaseException] | BaseException, inner: BaseException) -> BaseException:
    """``outer`` raised while handling ``inner``, as the libraries do."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - the implicit context is what is under test
    except BaseException as exc:  # noqa: BLE001
        return exc


def test_the_chain_decides_what_a_library_error_means():
    import asyncpg
    import psycopg2
    import redis
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    refused = psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: refused')
    assert classify(refused) is FailureKind.UNAVAILABLE
    assert classify(psycopg2.OperationalError("FATAL: password authentication failed")) is FailureKind.FAILED
    wrapped = _raised(sqlalchemy.exc.OperationalError("SELECT 1", {}, refused), refused)
    assert classify(wrapped) is FailureKind.UNAVAILABLE
    # A data source that cannot be reached now is retried, even inside the DataError the user would read.
    source = _raised(DataError("dataset_config.source", "could not connect to 'warehouse'"), refused)
    assert classify(source) is FailureKind.UNAVAILABLE
    assert classify(asyncpg.exceptions.StringDataRightTruncationError("value too long")) is (
        FailureKind.DETERMINISTIC
    )
    assert classify(asyncpg.exceptions.CannotConnectNowError("starting up")) is FailureKind.UNAVAILABLE
    assert classify(redis.exceptions.ConnectionError("Error 111")) is FailureKind.UNAVAILABLE
    down = _raised(
        MlflowException("API request to http://127.0.0.1:5000 failed: Max retries exceeded"),
        requests.exceptions.ConnectionError("refused"),
    )
    assert classify(down) is FailureKind.UNAVAILABLE
    bad = MlflowException("Param value too long", error_code=INVALID_PARAMETER_VALUE)
    assert classify(bad) is FailureKind.DETERMINISTIC
    assert classify(RuntimeError("?")) is FailureKind.FAILED
    assert (
        classify(ApplicationError("bad", type="DataError", non_retryable=True)) is FailureKind.DETERMINISTIC
    )

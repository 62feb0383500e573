"""One supervisor for every activity on every worker (a Temporal worker interceptor): it heartbeats for as long
as the activity works, and it decides, in this one place, what a failure means for the next attempt.

* **Heartbeats.** An activity called with a heartbeat timeout gets a heartbeat at least every quarter of it from
  the worker's event loop while it runs, whatever its own code does (a long read, a fit between rounds), so a
  missed heartbeat means a dead worker, a cancel reaches it, and Temporal never starts a retry beside a live
  first attempt.
* **Failures.** Bad input and deterministic failures (a value too long for its column, a bad MLflow parameter,
  a bug) are never retried. Connection and timeout errors, data sources' included, are always retried, with
  backoff inside the attempt, until the outage budget (``PMLS_OUTAGE_BUDGET_SECONDS``) is spent. Anything else
  is retried until the ``FAILED_ATTEMPTS``-th attempt; an attempt that ended without an answer (its worker
  died) is retried by the caller's retry policy (``workflows.calls.MAX_ATTEMPTS``).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from pmls.contracts.activities import FailureKind
from pmls.ml.errors import DataError

log = logging.getLogger("pmls.activities")

MAX_BEAT_INTERVAL = 10.0  # seconds between heartbeats, at most
# Attempts an activity gets for an error of its own (not an outage, not a dead worker: the retry policy's
# maximum_attempts bounds those).
FAILED_ATTEMPTS = 4

# SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many connections), 57P0x the server
# shutting down or starting up.
TRANSIENT_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")
# 22 data exception, 23 integrity constraint, 42 syntax error or access rule: the same statement fails again.
DETERMINISTIC_SQLSTATES = ("22", "23", "42")
TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
}
PERMANENT_CONNECT_ERRORS = ("authentication failed", "does not exist", "no pg_hba.conf entry", "SSL off")
# MLflow's answers that say the request itself is wrong.
MLFLOW_DETERMINISTIC = {
    "INVALID_PARAMETER_VALUE",
    "BAD_REQUEST",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_STATE",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
}
MLFLOW_TRANSIENT = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _sqlstate(exc: BaseException) -> str | None:
    # asyncpg: .sqlstate; psycopg2: .pgcode; psycopg 3: .sqlstate
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    code = _sqlstate(exc)
    if code is not None:
        return code.startswith(TRANSIENT_SQLSTATES)
    module, name = type(exc).__module__, type(exc).__name__
    if module.startswith("psycopg2") and name == "OperationalError":
        # No SQLSTATE: libpq could not reach the server (refused, timed out, closed under us), unless it was
        # turned away for good.
        return not any(word in str(exc) for word in PERMANENT_CONNECT_ERRORS)
    if module.startswith("asyncpg") and name in ("ConnectionDoesNotExistError", "InterfaceError"):
        return "connection" in str(exc).lower() or name == "ConnectionDoesNotExistError"
    if module.startswith("sqlalchemy") and name in ("DisconnectionError", "TimeoutError"):
        return True
    if module.startswith("redis") and name in ("ConnectionError", "TimeoutError", "BusyLoadingError"):
        return True
    if module.startswith(("requests", "urllib3")) and any(
        word in name for word in ("ConnectionError", "Timeout", "MaxRetryError", "ProtocolError")
    ):
        return True
    if module.startswith("mlflow"):
        status = getattr(exc, "get_http_status_code", lambda: None)()
        return getattr(exc, "error_code", None) in MLFLOW_TRANSIENT or status in (502, 503, 504)
    if module.startswith("temporalio.service") and name == "RPCError":
        return getattr(getattr(exc, "status", None), "name", "") in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    return False


def _is_deterministic(exc: BaseException) -> bool:
    if isinstance(exc, DataError):
        return True
    code = _sqlstate(exc)
    if code is not None and code.startswith(DETERMINISTIC_SQLSTATES):
        return True
    module, name = type(exc).__module__, type(exc).__name__
    if module.startswith("mlflow") and getattr(exc, "error_code", None) in MLFLOW_DETERMINISTIC:
        return True
    if module.startswith("pydantic") and name == "ValidationError":
        return True
    # Programming errors: the same code fails the same way on the next attempt.
    return isinstance(exc, (TypeError, AttributeError, NameError, NotImplementedError, ImportError))


def classify(exc: BaseException) -> FailureKind:
    """What an exception means for a retry. The whole chain is read: MLflow and SQLAlchemy wrap the error
    that decides it (a refused connection inside an ``MlflowException``)."""
    if isinstance(exc, ApplicationError) and exc.type in FailureKind.__members__.values():
        return FailureKind(exc.type)
    if isinstance(exc, ApplicationError) and exc.non_retryable:
        return FailureKind.DETERMINISTIC
    chain = list(_chain(exc))
    if any(_is_transient(e) for e in chain):
        return FailureKind.UNAVAILABLE
    if any(_is_deterministic(e) for e in chain):
        return FailureKind.DETERMINISTIC
    return FailureKind.FAILED


def _message(exc: BaseException) -> str:
    if isinstance(exc, DataError):
        return str(exc)  # names the request field
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text if isinstance(exc, ApplicationError) else f"{type(exc).__name__}: {text}"


class Supervisor(Interceptor):
    """Install on a worker: ``Worker(..., interceptors=[Supervisor(outage_budget_seconds)])``."""

    def __init__(self, outage_budget_seconds: float, fault_rate: float = 0.0) -> None:
        self.budget = outage_budget_seconds
        self.fault_rate = fault_rate  # PMLS_FAULT_INJECTION_RATE: attempts failed on purpose (tests only)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Supervised(next, self.budget, self.fault_rate)


class _Beats(ActivityOutboundInterceptor):
    """Remembers when the activity last heartbeat, so the keeper beats only when the activity is quiet."""

    def __init__(self, next: ActivityOutboundInterceptor) -> None:
        super().__init__(next)
        self.last = time.monotonic()

    def heartbeat(self, *details: Any) -> None:
        self.last = time.monotonic()
        super().heartbeat(*details)


class OutageTooLong(Exception):
    """A server stayed unreachable for the whole outage budget."""


class _Supervised(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, budget: float, fault_rate: float = 0.0) -> None:
        super().__init__(next)
        self.budget = budget
        self.fault_rate = fault_rate

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self.beats = _Beats(outbound)
        super().init(self.beats)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if self.fault_rate and random.random() < self.fault_rate:  # noqa: S311 - chaos, not cryptography
            log.warning("%s attempt %d: failed on purpose", info.activity_type, info.attempt)
            raise _decide(RuntimeError(f"injected fault (PMLS_FAULT_INJECTION_RATE={self.fault_rate})"))
        keeper = None
        if info.heartbeat_timeout:
            every = min(info.heartbeat_timeout.total_seconds() / 4, MAX_BEAT_INTERVAL)
            keeper = asyncio.create_task(self._keep_alive(every))
        # Outages are waited out inside the attempt (the attempt's timeout leaves room for the budget), so
        # Temporal's attempts count only real failures and vanished workers.
        input.fn = _waiting_out_outages(input.fn, info.activity_type, self.budget)
        try:
            return await self.next.execute_activity(input)
        except (CancelledError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise _decide(exc) from exc
        finally:
            if keeper is not None:
                keeper.cancel()

    async def _keep_alive(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            if time.monotonic() - self.beats.last >= every:
                self.beats.heartbeat()


class _Outage:
    """Backoff over one outage: 1 s doubling to 30 s, until ``budget`` seconds after its first failure."""

    def __init__(self, name: str, budget: float) -> None:
        self.name, self.budget = name, budget
        self.since: float | None = None
        self.delay = 1.0

    def next_wait(self, exc: Exception) -> float:
        """Seconds to wait before the next try; raises OutageTooLong once the budget is spent."""
        now = time.monotonic()
        self.since = self.since if self.since is not None else now
        waited = now - self.since
        if waited + self.delay > self.budget:
            raise OutageTooLong(
                f"{_message(exc)} (still unreachable after {waited:.0f} s; the outage budget is "
                f"{self.budget:.0f} s, PMLS_OUTAGE_BUDGET_SECONDS)"
            ) from exc
        wait, self.delay = self.delay, min(self.delay * 2, 30.0)
        log.warning("%s: %s; trying again in %.0f s", self.name, _message(exc), wait)
        return wait


def _waiting_out_outages(fn: Callable, name: str, budget: float) -> Callable:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any) -> Any:
            outage = _Outage(name, budget)
            while True:
                try:
                    return await fn(*args)
                except Exception as exc:
                    if classify(exc) is not FailureKind.UNAVAILABLE:
                        raise
                    await asyncio.sleep(outage.next_wait(exc))

        return run_async

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        outage = _Outage(name, budget)
        while True:
            try:
                return fn(*args)
            except Exception as exc:
                if classify(exc) is not FailureKind.UNAVAILABLE:
                    raise
                time.sleep(outage.next_wait(exc))  # a cancel arrives in this thread as an exception

    return run


def _decide(exc: Exception) -> ApplicationError:
    """The ApplicationError Temporal sees: its type is the failure's kind, non-retryable unless retrying helps."""
    if isinstance(exc, OutageTooLong):
        return ApplicationError(str(exc), type=FailureKind.UNAVAILABLE.value, non_retryable=True)
    kind = classify(exc)
    details = exc.details if isinstance(exc, ApplicationError) else ()
    if kind is FailureKind.DETERMINISTIC:
        # Bad input keeps its own type (DataError, UnsupportedError): the job's reason names it.
        kept = kind.value
        if isinstance(exc, ApplicationError) and exc.type:
            kept = exc.type
        elif isinstance(exc, DataError):
            kept = "DataError"
        return ApplicationError(_message(exc), *details, type=kept, non_retryable=True)
    attempt = activity.info().attempt
    give_up = attempt >= FAILED_ATTEMPTS
    message = f"{_message(exc)} (attempt {attempt}; no more)" if give_up else _message(exc)
    return ApplicationError(message, *details, type=kind.value, non_retryable=give_up)

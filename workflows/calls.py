"""How the workflows call activities: which queue, which retries. Deterministic, imported by both workflows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pmls.contracts.activities import ON_TRAINING_QUEUE, ON_TRIALS_QUEUE, FailureKind
    from pmls.contracts.temporal import CHILD_MEMO_KEYS, MEMO_OUTAGE_BUDGET, MEMO_TRIALS_QUEUE, TRIALS_QUEUE

# What fails the same way on the next attempt; ``activities.supervision`` marks these non-retryable itself,
# the policy says it once more for errors raised before the supervisor sees them.
NON_RETRYABLE = ["DataError", "ValidationError", "UnsupportedError", FailureKind.DETERMINISTIC.value]
DEFAULT_OUTAGE_BUDGET = timedelta(minutes=30)
# Outages are waited out inside an attempt by the supervisor (activities.supervision), so an attempt's timeout
# is its work plus the outage budget and attempts count only failures and workers that died. A dead worker is not
# the activity's fault: up to MAX_ATTEMPTS of them; an error of the activity's own is retried only while
# activities.supervision.FAILED_ATTEMPTS allows.
MAX_ATTEMPTS = 10
IO_RETRY = RetryPolicy(
    maximum_attempts=MAX_ATTEMPTS,
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=NON_RETRYABLE,
)
CPU_RETRY = RetryPolicy(maximum_attempts=MAX_ATTEMPTS, non_retryable_error_types=NON_RETRYABLE)
# A crashed trial worker is noticed by the heartbeat timeout and the batch re-runs elsewhere (its told trials
# are not run again). Bad parameters come back as a FAILED result, not an error: what raises is
# infrastructure (a dead worker).
TRIAL_RETRY = RetryPolicy(
    maximum_attempts=MAX_ATTEMPTS,
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2,
    maximum_interval=timedelta(seconds=15),
    non_retryable_error_types=["DataError", FailureKind.DETERMINISTIC.value],
)
HEARTBEAT = timedelta(seconds=60)  # CPU activities: the supervisor beats every 10 s while they work
IO_HEARTBEAT = timedelta(seconds=30)


def outage_budget() -> timedelta:
    """How long an activity keeps retrying an unreachable server (the job's memo: PMLS_OUTAGE_BUDGET_SECONDS)."""
    seconds = workflow.memo_value(MEMO_OUTAGE_BUDGET, default=None)
    return timedelta(seconds=float(seconds)) if seconds else DEFAULT_OUTAGE_BUDGET


def trials_queue() -> str:
    """The trials queue this job was started with (the memo carries it, so a deployment may rename queues)."""
    return str(workflow.memo_value(MEMO_TRIALS_QUEUE, default=TRIALS_QUEUE))


def child_memo() -> dict:
    return {k: workflow.memo_value(k, default=None) for k in CHILD_MEMO_KEYS}


def _check_queue(activity: Callable, groups: tuple[type, ...], queue: str) -> None:
    # Sent to a queue whose workers do not register it, an activity would wait there until its timeout.
    if not any(vars(group).get(activity.__name__) is activity for group in groups):
        raise TypeError(f"{activity.__qualname__} does not run on the {queue} queue")


async def io(activity: Callable, arg: Any, *, timeout: timedelta = timedelta(minutes=2)) -> Any:
    """A light activity on the workflow's own queue (a stub of a group in ``ON_TRAINING_QUEUE``)."""
    _check_queue(activity, ON_TRAINING_QUEUE, "training")
    return await workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=timeout + outage_budget(),
        heartbeat_timeout=IO_HEARTBEAT,
        retry_policy=IO_RETRY,
    )


async def cpu(activity: Callable, arg: Any, *, timeout: timedelta) -> Any:
    """A CPU activity on the trials queue (a stub of a group in ``ON_TRIALS_QUEUE``)."""
    _check_queue(activity, ON_TRIALS_QUEUE, "trials")
    return await workflow.execute_activity_method(
        activity,
        arg,
        task_queue=trials_queue(),
        start_to_close_timeout=timeout + outage_budget(),
        heartbeat_timeout=HEARTBEAT,
        retry_policy=CPU_RETRY,
        # The job is CANCELLED only once training has really stopped and freed its slot.
        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )

"""Temporal, from outside the workflows: the one client factory (with the pydantic data converter the contracts
need), and the reconciler for runs that Temporal closed without the workflow's own code running.

The workflow owns its job's row: it records every stage, and its own failure or cancellation. Only a run
closed from outside (``temporal workflow terminate``, a run timeout, a workflow task that kept failing) leaves
the row behind; :func:`reconcile_closed_jobs` is the one other writer, and only of such rows.
"""

from __future__ import annotations

import logging

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter

from pmls.contracts import TrainingStatus
from pmls.contracts.temporal import STATUS_KEY, TRAINING_WORKFLOW
from pmls.settings import Settings

log = logging.getLogger("pmls.reconciler")

# How a closed run reads as a job status (a run closed as COMPLETED has recorded its job itself).
CLOSED = {
    WorkflowExecutionStatus.COMPLETED: TrainingStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED: TrainingStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED: TrainingStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: TrainingStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: TrainingStatus.CANCELLED,
}
# Closed runs whose job the search attribute still shows as open: the workflow did not get to record the end.
ORPHANS_QUERY = (
    f"WorkflowType = '{TRAINING_WORKFLOW}' AND ExecutionStatus != 'Running' "
    f"AND {STATUS_KEY.name} IN ('{TrainingStatus.QUEUED.value}', '{TrainingStatus.RUNNING.value}')"
)


async def connect_temporal(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


def closed_outside(status: WorkflowExecutionStatus | None) -> str | None:
    """The error a job gets when its run was closed as ``status`` from outside; None while it runs."""
    if status is None or status not in CLOSED or CLOSED[status] is TrainingStatus.COMPLETED:
        return None
    return f"workflow {status.name.lower()} outside the service"


async def reconcile_closed_jobs(client: Client, jobs, cache=None) -> list[str]:
    """Mark the jobs whose runs were closed from outside (``jobs``: a JobStore; ``cache``: the Redis copy).
    Returns the job ids it updated. Idempotent: a terminal row is never changed again."""
    updated = []
    async for execution in client.list_workflows(ORPHANS_QUERY):
        reason = closed_outside(execution.status)
        job = await jobs.get(execution.id) if reason else None
        if job is None or job.status.is_terminal:
            continue
        if job.run_id is not None and execution.run_id != job.run_id:
            continue  # an earlier run (a reset terminates it): the row follows the newer one
        job = await jobs.update(
            job_id=job.job_id,
            status=CLOSED[execution.status],
            stage=job.current_stage,
            progress=job.progress_percentage,
            error=reason,
        )
        if job is not None and job.status.is_terminal:
            log.info("job %s: %s", job.job_id, reason)
            updated.append(job.job_id)
            if cache is not None:
                await cache.set_job(job)
    return updated


async def sync_queue(jobs, cache) -> int:
    """Rebuild Redis's ``training_queue`` from PostgreSQL's QUEUED rows (oldest first); returns its length."""
    queued = await jobs.queued()
    await cache.replace_queue([j.training_request for j in queued])
    return len(queued)


async def reconcile_unstarted(
    client: Client, jobs, cache=None, *, older_than_seconds: float = 60.0
) -> list[str]:
    """QUEUED rows without a workflow (the API stopped between recording the job and starting it) become FAILED
    at stage ``starting``, which frees the id for the request to be sent again: never a ghost."""
    from temporalio.service import RPCError, RPCStatusCode

    failed = []
    for job in await jobs.unstarted(older_than_seconds):
        try:
            await client.get_workflow_handle(job.job_id).describe()
            continue  # it has a workflow: waiting for its turn, or about to write its first status
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
        updated = await jobs.fail_unstarted(
            job.job_id, "the job's workflow was never started (the API stopped first); send the request again"
        )
        if (
            updated is not None
            and updated.status is TrainingStatus.FAILED
            and updated.current_stage == "starting"
        ):
            failed.append(job.job_id)
            log.info("job %s: never started", job.job_id)
            if cache is not None:
                await cache.set_job(updated)
    return failed

"""Asking a lineage workflow to promote or roll back: the one path for the API and the training job's deploy
stage. Update-with-start (the lineage's workflow is started by its first operation); a refusal by the gates is
recorded here with its event, since a rejected update leaves no trace in the workflow's history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from pmls.contracts.deployment import (
    BAD_DEPLOYMENT,
    GATE_REJECTED,
    Candidate,
    LineageState,
    PromoteRequest,
    RollbackCommand,
    RollbackRequest,
    evaluate_gates,
    refusal,
)
from pmls.contracts.models import DeploymentConfig, DeploymentResult, ModelArtifact
from pmls.contracts.temporal import LINEAGE_WORKFLOW, PROMOTE_UPDATE, ROLLBACK_UPDATE, lineage_workflow_id
from pmls.storage.postgres import DeploymentStore


class DeploymentRefused(ValueError):
    """The lineage workflow cannot carry out the request (not a gate: those answer REJECTED)."""


def new_deployment_id() -> str:
    return f"deploy_{uuid.uuid4().hex[:12]}"


def _start(model_name: str, task_queue: str) -> WithStartWorkflowOperation:
    return WithStartWorkflowOperation(
        LINEAGE_WORKFLOW,
        LineageState(model_name=model_name),
        id=lineage_workflow_id(model_name),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"deployments of lineage {model_name}",
    )


def _refusal(exc: WorkflowUpdateFailedError) -> ApplicationError | None:
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in (GATE_REJECTED, BAD_DEPLOYMENT):
        return cause
    return None


async def promote(
    client: Client,
    task_queue: str,
    store: DeploymentStore,
    artifact: ModelArtifact,
    config: DeploymentConfig,
    *,
    deployment_id: str | None = None,
    job_id: str | None = None,
    requested_by: str | None = None,
) -> DeploymentResult:
    """DEPLOYED, UNCHANGED or ROLLED_BACK (its smoke test failed) from the lineage workflow; REJECTED, recorded
    with its event, when a gate fails. Raises DeploymentRefused for a request it cannot carry out."""
    deployment_id = deployment_id or new_deployment_id()
    request = PromoteRequest(
        deployment_id=deployment_id,
        candidate=Candidate.of(artifact),
        config=config,
        requested_by=requested_by,
        job_id=job_id,
        requested_at=datetime.now(UTC),
    )
    try:
        return await client.execute_update_with_start_workflow(
            PROMOTE_UPDATE,
            request,
            start_workflow_operation=_start(artifact.model_name, task_queue),
            id=deployment_id,
            result_type=DeploymentResult,
        )
    except WorkflowUpdateFailedError as exc:
        refused = _refusal(exc)
        if refused is None:
            raise
        if refused.type == BAD_DEPLOYMENT:
            raise DeploymentRefused(refused.message) from exc
    gates = evaluate_gates(request.candidate, config)
    result = DeploymentResult(
        deployment_id=deployment_id,
        model_id=artifact.model_id,
        model_name=artifact.model_name,
        version=artifact.version,
        target=config.target,
        alias=config.alias,
        status="REJECTED",
        deployed_at=request.requested_at,
        deployed_by=requested_by,
        job_id=job_id,
        gates=gates,
        reason=config.reason,
        message=f"not deployed, a gate failed: {refusal(gates)}",
    )
    await store.record(result, "model_deployment_rejected")
    return result


async def rollback(
    client: Client,
    task_queue: str,
    model_name: str,
    request: RollbackRequest,
    *,
    requested_by: str | None = None,
) -> DeploymentResult:
    command = RollbackCommand(
        deployment_id=new_deployment_id(),
        model_name=model_name,
        alias=request.alias,
        to_version=request.to_version,
        reason=request.reason,
        requested_by=requested_by,
        requested_at=datetime.now(UTC),
    )
    try:
        return await client.execute_update_with_start_workflow(
            ROLLBACK_UPDATE,
            command,
            start_workflow_operation=_start(model_name, task_queue),
            id=command.deployment_id,
            result_type=DeploymentResult,
        )
    except WorkflowUpdateFailedError as exc:
        refused = _refusal(exc)
        if refused is None:
            raise
        raise DeploymentRefused(refused.message) from exc


def prediction_mismatch(got: pd.DataFrame, expected: pd.DataFrame) -> str | None:
    """Why two prediction frames differ (None: they agree to float tolerance)."""
    if list(got.columns) != list(expected.columns) or len(got) != len(expected):
        return f"predictions have columns {list(got.columns)} x {len(got)}, expected {list(expected.columns)} x {len(expected)}"
    for col in expected.columns:
        a, b = got[col].to_numpy(), expected[col].to_numpy()
        if np.issubdtype(b.dtype, np.number) and np.issubdtype(a.dtype, np.number):
            same = np.allclose(a.astype(float), b.astype(float), rtol=1e-5, atol=1e-8, equal_nan=True)
        else:
            same = bool((a.astype(str) == b.astype(str)).all())
        if not same:
            return f"predictions of column {col!r} differ from those recorded at registration"
    return None

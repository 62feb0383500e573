"""The gateway's use cases: start, status, cancel, list, deploy, artifacts. Routes call one method each."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from pmls.contracts import (
    SUPPORTED_MODEL_TYPES,
    SUPPORTED_TRAINING_MODES,
    CancellationResult,
    DeploymentConfig,
    DeploymentResult,
    ModelArtifact,
    ModelType,
    QueuedJob,
    TrainingJob,
    TrainingRequest,
    TrainingStatus,
)
from pmls.contracts.deployment import AVAILABLE_TARGETS, RollbackRequest, ServedVersion
from pmls.contracts.errors import (
    ConflictError,
    InvalidError,
    NotFoundError,
    TooManyError,
    UnavailableError,
    UnsupportedError,
)
from pmls.contracts.experiments import HyperparameterExperiment
from pmls.contracts.ids import new_job_id, request_hash
from pmls.contracts.params import unknown_parameters
from pmls.contracts.temporal import (
    MEMO_MAX_RUNNING,
    MEMO_OUTAGE_BUDGET,
    MEMO_TRIAL_SLOTS,
    MEMO_TRIALS_QUEUE,
    MODEL_NAME_KEY,
    MODEL_TYPE_KEY,
    STATUS_KEY,
    TRAINING_MODE_KEY,
)
from pmls.contracts.workflow import Progress, TrainingWorkflowInput
from pmls.deployments import DeploymentRefused, promote, rollback
from pmls.ml.errors import DataError
from pmls.ml.sources import FileAccess
from pmls.settings import Settings
from pmls.storage.cache import Cache
from pmls.storage.postgres import ArtifactStore, DeploymentStore, ExperimentStore, JobStore
from pmls.storage.registry import ModelRegistry
from pmls.storage.sources import Connections, check_source
from pmls.temporal import CLOSED, closed_outside
from workflows.training import TrainingWorkflow

log = logging.getLogger("pmls.api")

STARTING = "starting"  # the stage of a job whose workflow could not be started
START_ATTEMPTS = 4  # tries to reach Temporal (0.5 s, 1 s, 2 s apart) before the job is recorded FAILED


def check_target(config: DeploymentConfig, field: str = "target", *, cluster: bool = False) -> None:
    """A target this deployment can reach: ``kubernetes`` needs a cluster configured for the workers."""
    if config.target not in AVAILABLE_TARGETS:
        raise UnsupportedError(
            f"deployment target {config.target!r} is not available yet; use 'registry' (the MLflow alias) or "
            "'local' (served over HTTP by `pmls serve`)",
            field=field,
        )
    if config.target == "kubernetes" and not cluster:
        raise UnsupportedError(
            "deployment target 'kubernetes' needs a cluster: set KUBECONFIG (or run pmls in the cluster) for the "
            "API and the workers",
            field=field,
        )


def check_supported(request: TrainingRequest) -> None:
    if request.model_type not in SUPPORTED_MODEL_TYPES:
        names = ", ".join(sorted(t.value for t in SUPPORTED_MODEL_TYPES))
        raise UnsupportedError(
            f"{request.model_type.value} is not supported yet; supported: {names}", field="model_type"
        )
    unknown = unknown_parameters(request.model_type, list(request.hyperparameter_config.search_space))
    if unknown and request.model_type is ModelType.ENSEMBLE:
        raise UnsupportedError(
            "ENSEMBLE searches each member family's default space; leave search_space empty",
            field="hyperparameter_config.search_space",
        )
    if unknown:
        raise UnsupportedError(
            f"{request.model_type.value} has no parameter {', '.join(unknown)}",
            field=f"hyperparameter_config.search_space.{unknown[0]}",
        )
    if request.training_mode not in SUPPORTED_TRAINING_MODES:
        raise UnsupportedError(
            f"{request.training_mode.value} is not supported yet; use FULL_RETRAIN", field="training_mode"
        )


class JobService:
    def __init__(
        self,
        *,
        settings: Settings,
        temporal: Client,
        jobs: JobStore,
        artifacts: ArtifactStore,
        deployments: DeploymentStore,
        experiments: ExperimentStore,
        cache: Cache,
        registry: ModelRegistry,
    ) -> None:
        self.experiments = experiments
        self.settings = settings
        self.access = FileAccess(tuple(settings.data_root_paths))
        self.connections = Connections(settings.connections)
        self.temporal = temporal
        self.jobs = jobs
        self.artifacts = artifacts
        self.deployments = deployments
        self.cache = cache
        self.registry = registry

    # -- training ------------------------------------------------------------------------------
    async def start(
        self, request: TrainingRequest, *, started_by: str | None = None
    ) -> tuple[TrainingJob, bool]:
        """Idempotent on ``training_id``: same body -> the existing job; another body -> 409. A caller with as
        many active jobs as ``PMLS_MAX_ACTIVE_JOBS_PER_CALLER`` gets 429 for a new one."""
        check_supported(request)
        check_target(
            request.deployment_config, "deployment_config.target", cluster=self.settings.kubernetes.configured
        )
        try:
            check_source(request.dataset_config.source, self.access, self.connections)
        except DataError as exc:
            raise InvalidError(exc.message, field=exc.field) from exc
        job_id = request.training_id or new_job_id()
        request = request.model_copy(update={"training_id": job_id})
        digest = request_hash(request)
        existing = await self.jobs.request_hash(job_id)  # a repeat of an existing job is never refused
        limit = self.settings.auth.max_active_jobs_per_caller
        if existing is None and started_by and await self.jobs.active_count(started_by) >= limit:
            raise TooManyError(
                f"'{started_by}' has {limit} jobs queued or running (PMLS_MAX_ACTIVE_JOBS_PER_CALLER); "
                "wait for one to finish or cancel one"
            )
        job, created = await self.jobs.create(
            job_id=job_id, request=request, request_hash=digest, started_by=started_by
        )
        if not created and job.status is TrainingStatus.FAILED and job.current_stage == STARTING:
            # Its workflow never started: the id is free for this request, corrected or not.
            job, created = await self.jobs.requeue_unstarted(
                job_id=job_id, request=request, request_hash=digest, started_by=started_by
            )
        # Not created: it existed, or another request inserted it since ``existing`` was read.
        if not created and (existing or await self.jobs.request_hash(job_id)) != digest:
            raise ConflictError(
                f"training_id {job_id!r} already exists with a different request", field="training_id"
            )
        if created:
            # Before the start: the workflow's first status update removes the entry, never the other way round.
            await self.cache.enqueue(job_id, request)
            await self.cache.set_job(job)
        await self._start_workflow(job_id, request, created)
        return job, created

    async def _start_workflow(self, job_id: str, request: TrainingRequest, created: bool) -> None:
        attrs = TypedSearchAttributes(
            [
                SearchAttributePair(STATUS_KEY, TrainingStatus.QUEUED.value),
                SearchAttributePair(MODEL_TYPE_KEY, request.model_type.value),
                SearchAttributePair(TRAINING_MODE_KEY, request.training_mode.value),
                SearchAttributePair(MODEL_NAME_KEY, request.lineage),
            ]
        )
        cfg = request.dataset_config
        for attempt in range(START_ATTEMPTS):
            try:
                await self._start_once(job_id, request, attrs, cfg)
                return
            except RPCError as exc:
                refused = exc.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION)
                if refused or attempt == START_ATTEMPTS - 1:
                    await self._never_started(job_id, exc, refused, created)
                await asyncio.sleep(0.5 * 2**attempt)

    async def _never_started(self, job_id: str, exc: RPCError, refused: bool, created: bool) -> None:
        """The job is FAILED, its reason recorded, never a QUEUED row without a workflow; the same
        training_id may be sent again (corrected, or once Temporal is back) and starts afresh. A repeated request
        leaves the row alone: its workflow may run (or wait for its turn) already, and the reconciler fails the
        row if it has none."""
        reason = (
            f"Temporal refused to start the job: {exc.message}"
            if refused
            else f"could not start the job: Temporal is unavailable ({exc.message}); send the request again"
        )
        job = await self.jobs.fail_unstarted(job_id, reason) if created else None
        if job is not None:
            await self.cache.set_job(job)
            if job.status is not TrainingStatus.QUEUED:
                await self.cache.dequeue(job_id)
        if refused:
            raise InvalidError(reason, field="training_id") from exc
        raise UnavailableError(reason) from exc

    async def _start_once(self, job_id: str, request: TrainingRequest, attrs, cfg) -> None:
        t = self.settings.temporal
        running = self.settings.worker.max_running_jobs
        limit = {MEMO_MAX_RUNNING: running} if running else {}
        try:
            await self.temporal.start_workflow(
                TrainingWorkflow.run,
                TrainingWorkflowInput(job_id=job_id, request=request),
                id=job_id,
                task_queue=t.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                # A job runs once: starting a finished job's id again must not re-run it.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=attrs,
                memo={
                    MEMO_TRIALS_QUEUE: t.trials_task_queue,
                    MEMO_TRIAL_SLOTS: self.settings.worker.trial_slots,
                    MEMO_OUTAGE_BUDGET: self.settings.worker.outage_budget_seconds,
                }
                | limit,
                static_summary=f"{request.model_type.value} {request.training_mode.value} -> {request.lineage}",
                static_details=f"target `{cfg.target}` from `{cfg.source}`",
            )
        except WorkflowAlreadyStartedError:
            pass  # a closed run with this id: the job already ran

    async def status(self, job_id: str) -> TrainingJob:
        cached = await self.cache.get_job(job_id)
        # A finished job's cached status is final, unless this process failed to overwrite it since (a FAILED job
        # sent again): then PostgreSQL decides, and the cached copy serves only while PostgreSQL is down.
        if cached is not None and cached.status.is_terminal and not self.cache.maybe_stale(job_id):
            return cached
        try:
            job = await self.jobs.get(job_id)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            if cached is None:
                raise  # 503 (api.errors)
            return cached  # PostgreSQL unreachable: the last status the workflow recorded, from Redis
        if job is None:
            raise NotFoundError(f"no training job {job_id!r}", field="job_id")
        if not job.status.is_terminal:
            job = await self._live(job)
        return job

    async def _live(self, job: TrainingJob) -> TrainingJob:
        """A running job as the workflow sees it now (read only: the workflow and the reconciler write the row)."""
        handle = self.temporal.get_workflow_handle(job.job_id)
        try:
            desc = await handle.describe(rpc_timeout=_seconds(2))
        except RPCError:
            return job
        reason = closed_outside(desc.status)
        if reason is not None:
            # Read only: the reconciler in the training worker records it (pmls.temporal.reconcile_closed_jobs).
            return job.model_copy(update={"status": CLOSED[desc.status], "error": job.error or reason})
        if desc.status is not WorkflowExecutionStatus.RUNNING:
            return job  # COMPLETED: the workflow records it itself, the row follows in a moment
        try:
            progress: Progress = await handle.query(TrainingWorkflow.progress, rpc_timeout=_seconds(2))
        except (RPCError, WorkflowFailureError):
            return job
        return job.model_copy(
            update={
                "status": progress.status if not job.status.is_terminal else job.status,
                "current_stage": progress.stage,
                "progress_percentage": progress.progress_percentage,
                "training_metrics": progress.metrics or job.training_metrics,
                "estimated_completion": progress.estimated_completion,
                "error": progress.error or job.error,
                "model_id": progress.model_id or job.model_id,
            }
        )

    async def cancel(self, job_id: str, *, wait_seconds: float = 10.0) -> CancellationResult:
        job = await self.status(job_id)
        if job.status.is_terminal:
            return CancellationResult(
                job_id=job_id,
                status=job.status,
                cancelled=False,
                message=f"job already {job.status.value}; nothing to cancel",
            )
        try:
            await self.temporal.get_workflow_handle(job_id).cancel()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise UnavailableError(f"Temporal is unavailable: {exc.message}") from exc
        job = await self._wait_terminal(job_id, wait_seconds)
        return CancellationResult(
            job_id=job_id,
            status=job.status,
            cancelled=True,
            message="cancelled" if job.status.is_terminal else "cancellation requested",
        )

    async def _wait_terminal(self, job_id: str, seconds: float) -> TrainingJob:
        deadline = asyncio.get_running_loop().time() + seconds
        job = await self.jobs.get(job_id)
        while job is not None and not job.status.is_terminal and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.25)
            job = await self.jobs.get(job_id)
        return job

    async def trials(self, job_id: str) -> list[HyperparameterExperiment]:
        cached = await self.cache.get_experiments(job_id)
        if cached is not None:
            return cached
        job = await self.status(job_id)  # 404 for an unknown job
        trials = [HyperparameterExperiment.model_validate(r) for r in await self.experiments.list(job_id)]
        if job.status.is_terminal:
            # A running job's trial slots write rows (and drop this key) as they go; a closed job's rows stay.
            await self.cache.set_experiments(job_id, trials)
        return trials

    async def queue(self) -> list[QueuedJob]:
        """The QUEUED jobs in the order they get their turn (PostgreSQL: the truth)."""
        return [
            QueuedJob(
                position=i,
                job_id=job.job_id,
                model_type=job.training_request.model_type,
                model_name=job.training_request.lineage,
                queued_at=job.created_at,
                started_by=job.started_by,
            )
            for i, job in enumerate(await self.jobs.queued(), start=1)
        ]

    async def active(self) -> list[TrainingJob]:
        return await self.jobs.list(statuses=[TrainingStatus.QUEUED, TrainingStatus.RUNNING])

    async def list_jobs(self, statuses: list[TrainingStatus] | None, limit: int) -> list[TrainingJob]:
        return await self.jobs.list(statuses=statuses, limit=limit)

    # -- models --------------------------------------------------------------------------------
    async def artifact(self, model_id: str) -> ModelArtifact:
        cached = await self.cache.get_artifact(model_id)
        if cached is not None:
            return cached
        artifact = await self.artifacts.get(model_id)
        if artifact is None:
            raise NotFoundError(f"no model {model_id!r}", field="model_id")
        await self.cache.set_artifact(artifact)
        return artifact

    async def list_models(self, model_name: str | None, limit: int) -> list[ModelArtifact]:
        return await self.artifacts.list(model_name=model_name, limit=limit)

    async def deploy(
        self, model_id: str, config: DeploymentConfig, *, deployed_by: str | None = None
    ) -> DeploymentResult:
        """Ask the lineage workflow to promote this version: DEPLOYED, UNCHANGED, ROLLED_BACK (its smoke test
        failed) or REJECTED (a gate failed; the answer names it)."""
        check_target(config, cluster=self.settings.kubernetes.configured)
        artifact = await self.artifact(model_id)
        try:
            return await promote(
                self.temporal,
                self.settings.temporal.task_queue,
                self.deployments,
                artifact,
                config,
                requested_by=deployed_by,
            )
        except DeploymentRefused as exc:
            raise ConflictError(str(exc), field="model_id") from exc

    async def rollback(
        self, model_name: str, request: RollbackRequest, *, requested_by: str | None = None
    ) -> DeploymentResult:
        """Back to the version the previous alias holds (or ``to_version``), smoke-tested like a promotion."""
        try:
            return await rollback(
                self.temporal,
                self.settings.temporal.task_queue,
                model_name,
                request,
                requested_by=requested_by,
            )
        except DeploymentRefused as exc:
            raise ConflictError(str(exc), field="to_version") from exc

    async def deployment_history(self, model_name: str, limit: int = 50) -> list[DeploymentResult]:
        return await self.deployments.history(model_name, limit)

    async def served(self, model_name: str, alias: str, at: datetime | None) -> ServedVersion:
        served = await self.deployments.served_at(model_name, alias, at or datetime.now(UTC))
        if served is None:
            when = f"at {at.isoformat()}" if at else "now"
            raise NotFoundError(f"no version of {model_name!r} served as {alias!r} {when}", field="at")
        return served


def _seconds(value: float):
    from datetime import timedelta

    return timedelta(seconds=value)

"""The seed's six endpoints, plus listings, rollback, deployment history, served-when and health."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.auth import Deployer, Reader, Trainer
from api.deps import ServiceDep
from pmls.contracts import (
    CancellationResult,
    DeploymentConfig,
    DeploymentResult,
    ModelArtifact,
    QueuedJob,
    TrainingJob,
    TrainingRequest,
    TrainingStatus,
)
from pmls.contracts.deployment import RollbackRequest, ServedVersion
from pmls.contracts.errors import ForbiddenError
from pmls.contracts.experiments import HyperparameterExperiment

training = APIRouter(prefix="/api/v1/training", tags=["training"])
models = APIRouter(prefix="/api/v1/models", tags=["models"])
health = APIRouter(tags=["health"])


@training.post(
    "/start",
    response_model=TrainingJob,
    status_code=202,
    responses={200: {"model": TrainingJob}, 409: {}, 422: {}},
)
async def start_training(
    request: TrainingRequest, service: ServiceDep, response: Response, caller: Trainer
) -> TrainingJob:
    """Start a training job (202); the same training_id and body again returns that job (200). Scope `train`."""
    job, created = await service.start(request, started_by=caller.name)
    response.status_code = 202 if created else 200
    return job


@training.get("/{job_id}/status", response_model=TrainingJob)
async def training_status(job_id: str, service: ServiceDep, _caller: Reader) -> TrainingJob:
    """Status, stage, progress, ETA and metrics of one job."""
    return await service.status(job_id)


@training.post("/{job_id}/cancel", response_model=CancellationResult)
async def cancel_training(job_id: str, service: ServiceDep, _caller: Trainer) -> CancellationResult:
    """Cancel a job; running training stops within seconds, the job ends CANCELLED. Scope `train`."""
    return await service.cancel(job_id)


@training.get("/{job_id}/trials", response_model=list[HyperparameterExperiment])
async def training_trials(
    job_id: str, service: ServiceDep, _caller: Reader
) -> list[HyperparameterExperiment]:
    """The job's hyperparameter trials: parameters, CV score, duration, state (COMPLETE, PRUNED, ...)."""
    return await service.trials(job_id)


@training.get("/queue", response_model=list[QueuedJob])
async def training_queue(service: ServiceDep, _caller: Reader) -> list[QueuedJob]:
    """The jobs waiting to run, oldest first, with their positions (with PMLS_MAX_RUNNING_JOBS set, a job
    waits QUEUED until fewer jobs run; Redis's `training_queue` holds the same requests in the same order)."""
    return await service.queue()


@training.get("/jobs/active", response_model=list[TrainingJob])
async def active_jobs(service: ServiceDep, _caller: Reader) -> list[TrainingJob]:
    """Jobs that are QUEUED or RUNNING, newest first."""
    return await service.active()


@training.get("/jobs", response_model=list[TrainingJob])
async def list_jobs(
    service: ServiceDep,
    _caller: Reader,
    status: Annotated[list[TrainingStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[TrainingJob]:
    """All jobs, newest first, optionally filtered by status."""
    return await service.list_jobs(status, limit)


@models.post(
    "/deploy/{model_id}", response_model=DeploymentResult, responses={403: {}, 404: {}, 409: {}, 422: {}}
)
async def deploy_model(
    model_id: str, service: ServiceDep, caller: Deployer, config: DeploymentConfig | None = None
) -> DeploymentResult:
    """Promote this version through its lineage's deployment workflow: the gates (`deployment_ready`,
    `min_improvement`, `min_primary_metric`, `max_latency_ms_per_row`, `max_model_size_mb`; `force` overrides
    them, recorded as forced), the alias move (the holder until now keeps `previous`), a smoke test on held-out
    rows and an automatic rollback when it fails. Answers DEPLOYED, UNCHANGED, ROLLED_BACK or REJECTED (with
    the gate, its threshold and the value). Scope `deploy`; `force` needs `admin`."""
    config = config or DeploymentConfig()
    if config.force and not caller.can("admin"):
        raise ForbiddenError(
            f"force (promoting past failed gates) needs the 'admin' scope; '{caller.name}' has: "
            + ", ".join(sorted(caller.scopes))
        )
    return await service.deploy(model_id, config, deployed_by=caller.name)


@models.post("/{model_name}/rollback", response_model=DeploymentResult, responses={409: {}, 422: {}})
async def rollback_model(
    model_name: str, service: ServiceDep, caller: Deployer, request: RollbackRequest | None = None
) -> DeploymentResult:
    """Serve the previous version again (the holder of the `previous` alias), or `to_version`; smoke-tested
    like a promotion. 409 when there is nowhere to go. Scope `deploy`."""
    return await service.rollback(model_name, request or RollbackRequest(), requested_by=caller.name)


@models.get("/{model_name}/production", response_model=ServedVersion, responses={404: {}})
async def served_version(
    model_name: str,
    service: ServiceDep,
    _caller: Reader,
    at: datetime | None = None,
    alias: Annotated[str, Query(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")] = "production",
) -> ServedVersion:
    """Which version served as `alias` at time `at` (default: now), from the deployment history."""
    return await service.served(model_name, alias, at)


@models.get("/artifacts/{model_id}", response_model=ModelArtifact)
async def model_artifact(model_id: str, service: ServiceDep, _caller: Reader) -> ModelArtifact:
    """One registered model version with its metrics."""
    return await service.artifact(model_id)


@models.get("", response_model=list[ModelArtifact])
async def list_models(
    service: ServiceDep,
    _caller: Reader,
    model_name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[ModelArtifact]:
    """Registered model versions, newest first, optionally of one lineage."""
    return await service.list_models(model_name, limit)


@models.get("/{model_name}/deployments", response_model=list[DeploymentResult])
async def deployments(
    model_name: str,
    service: ServiceDep,
    _caller: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[DeploymentResult]:
    """Every promotion, rejection and rollback of a lineage, newest first: version, target, when, by which job
    or caller, the gate values and why."""
    return await service.deployment_history(model_name, limit)


@health.get("/healthz")
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(request: Request, service: ServiceDep, response: Response) -> dict:
    """PostgreSQL and Temporal reachable (Redis is reported, but only a cache)."""
    checks = {"postgres": False, "temporal": False, "redis": await service.cache.ping()}
    try:
        checks["postgres"] = await service.jobs.pool.fetchval("SELECT 1") == 1
    except Exception:  # noqa: BLE001 - reported below
        pass
    try:
        checks["temporal"] = await service.temporal.service_client.check_health()
    except Exception:  # noqa: BLE001
        pass
    ready = checks["postgres"] and checks["temporal"]
    response.status_code = 200 if ready else 503
    return {"status": "ready" if ready else "not ready", "checks": checks}

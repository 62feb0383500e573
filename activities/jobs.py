"""Light activities on the training queue: job status, registration, completion and its event."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import polars as pl
from temporalio import activity
from temporalio.client import Client

from pmls.contracts import (
    ModelArtifact,
    PerformanceMetrics,
    Task,
    TrainingCompletedData,
    TrainingCompletedEvent,
    TrainingStatus,
)
from pmls.contracts import activities as contract
from pmls.contracts.ids import completed_event_id, failed_event_id
from pmls.contracts.workflow import CompleteJobInput, Progress, RegisteredModel, RegisterModelInput, TurnInput
from pmls.storage.cache import Cache
from pmls.storage.events import relay_outbox
from pmls.storage.postgres import (
    ExperimentStore,
    JobStore,
    Outbox,
    add_event,
    add_outbox,
    upsert_artifact,
)
from pmls.storage.registry import ModelRegistry

TURN_POLL_SECONDS = 2.0


class JobActivities(contract.Jobs):
    def __init__(
        self, pool: asyncpg.Pool, cache: Cache, registry: ModelRegistry, temporal: Client | None = None
    ) -> None:
        self.temporal = temporal
        self.jobs = JobStore(pool)
        self.outbox = Outbox(pool)
        self.pool = pool
        self.cache = cache
        self.registry = registry

    @activity.defn
    async def record_job_status(self, update: Progress) -> None:
        """PostgreSQL first (the truth), then the Redis copy. A failure is recorded with its
        ``model_training_failed`` event, in one transaction."""
        failed = update.status is TrainingStatus.FAILED
        async with self.pool.acquire() as conn, conn.transaction():
            job = await self.jobs.update(
                job_id=update.job_id,
                status=update.status,
                stage=update.stage,
                progress=update.progress_percentage,
                metrics=update.metrics,
                error=update.error,
                model_id=update.model_id,
                estimated_completion=update.estimated_completion,
                run_id=update.run_id,
                run_at=update.at,
                conn=conn,
            )
            if failed and job is not None and job.status is TrainingStatus.FAILED:
                event_id = failed_event_id(update.job_id, update.run_id)
                payload = {
                    "event_id": event_id,
                    "timestamp": datetime.now(UTC).isoformat(),
                    "training_failed": {
                        "training_job_id": update.job_id,
                        "model_type": job.training_request.model_type.value,
                        "model_name": job.training_request.lineage,
                        "stage": update.stage,
                        "error": update.error,
                        "run_id": update.run_id,
                    },
                }
                await add_outbox(conn, event_id, "model_training_failed", update.job_id, payload)
        if failed:
            await relay_outbox(self.outbox, self.cache)
        if job is not None:
            await self.cache.set_job(job)
        if update.status is not TrainingStatus.QUEUED:
            await self.cache.dequeue(update.job_id)

    @activity.defn
    async def wait_for_turn(self, inp: TurnInput) -> None:
        """Hold a QUEUED job until PMLS_MAX_RUNNING_JOBS lets it run (its turn comes oldest first); the
        supervisor heartbeats meanwhile, so a cancel reaches it."""
        while True:
            admitted = await self.jobs.admit(inp.job_id, inp.limit)
            if admitted is not False:
                break
            await asyncio.sleep(TURN_POLL_SECONDS)
        await self.cache.dequeue(inp.job_id)

    @activity.defn
    async def cancel_execution(self, job_id: str) -> None:
        """Temporal's own cancel of the job's workflow, so that a cancel by signal closes it as Cancelled."""
        if self.temporal is None:
            raise RuntimeError("this worker has no Temporal client to cancel with")
        await self.temporal.get_workflow_handle(job_id).cancel()

    @activity.defn
    async def register_model(self, inp: RegisterModelInput) -> RegisteredModel:
        """Log the run with its plots and register the pyfunc model (MLflow's client is sync: a thread)."""
        trials = await ExperimentStore(self.pool).list(inp.job_id)
        job = await self.jobs.get(inp.job_id)
        return await asyncio.to_thread(self._register, inp, trials, job.started_by if job else None)

    def _register(
        self, inp: RegisterModelInput, trials: list[dict], started_by: str | None
    ) -> RegisteredModel:
        from activities.report import make_plots
        from pmls.ml.bundle import load_bundle

        bundle = load_bundle(inp.trained.bundle_uri)
        sample = pl.read_parquet(inp.splits.test.uri).select(bundle.input_columns).head(20).to_pandas()
        with tempfile.TemporaryDirectory(prefix="pmls-plots-") as tmp:
            make_plots(inp, bundle, trials, Path(tmp))
            return self.registry.register(
                job_id=inp.job_id,
                request=inp.request,
                splits=inp.splits,
                trained=inp.trained,
                bundle=bundle,
                sample=sample,
                comparison=inp.comparison,
                plots_dir=Path(tmp),
                started_by=started_by,
            )

    @activity.defn
    async def record_artifact(self, inp: CompleteJobInput) -> ModelArtifact:
        artifact = build_artifact(inp)
        async with self.pool.acquire() as conn:
            await upsert_artifact(conn, artifact)
        await self.cache.set_artifact(artifact)
        return artifact

    @activity.defn
    async def complete_job(self, inp: CompleteJobInput) -> ModelArtifact:
        """One transaction: the artifact row, the COMPLETED job and the outbox event; then the relay."""
        artifact = build_artifact(inp)
        event = build_event(inp, artifact)
        async with self.pool.acquire() as conn, conn.transaction():
            await upsert_artifact(conn, artifact)
            job = await self.jobs.update(
                job_id=inp.job_id,
                status=TrainingStatus.COMPLETED,
                stage="completed",
                progress=100.0,
                metrics=inp.trained.metrics,
                model_id=artifact.model_id,
                run_id=inp.run_id,
                run_at=inp.finished_at,
                conn=conn,
            )
            await add_event(conn, event, aggregate_id=inp.job_id)
        if job is not None:
            await self.cache.set_job(job)
        await self.cache.set_artifact(artifact)
        await relay_outbox(self.outbox, self.cache)
        return artifact


def beats_baseline(task: Task, test: dict[str, float], n_classes: int) -> bool:
    """Deployment gate until the champion gates arrive: the model must beat a trivial baseline."""
    if task is Task.REGRESSION:
        return test.get("r2", float("-inf")) > 0.0
    if task is Task.BINARY:
        return test.get("roc_auc", 0.0) > 0.5
    return test.get("balanced_accuracy", 0.0) > 1.0 / max(n_classes, 2)


def deployment_ready(inp: CompleteJobInput) -> bool:
    """The gates: better than a trivial baseline, and better than the champion by ``min_improvement``."""
    trained, comparison = inp.trained, inp.comparison
    if not beats_baseline(trained.task, trained.metrics.test_metrics, len(trained.classes or [])):
        return False
    if comparison is None or comparison.first_version or comparison.performance_improvement is None:
        return True
    return comparison.performance_improvement >= inp.request.deployment_config.min_improvement


def build_artifact(inp: CompleteJobInput) -> ModelArtifact:
    trained, reg, comparison = inp.trained, inp.registered, inp.comparison
    metrics = trained.metrics
    perf = PerformanceMetrics(
        primary_metric=trained.primary_metric,
        test=metrics.test_metrics,
        validation=metrics.validation_metrics,
        prediction_latency_ms_per_row=trained.latency_ms_per_row,
        cv_mean=trained.cv.mean if trained.cv and trained.cv.scores else None,
        cv_std=trained.cv.std if trained.cv and trained.cv.scores else None,
        performance_improvement=comparison.performance_improvement if comparison else None,
        champion_model_id=comparison.champion_model_id if comparison else None,
        fitted_on=trained.fitted_on,
        test_metrics_fitted_on=trained.evaluated_with,
    )
    return ModelArtifact(
        model_id=reg.model_id,
        model_type=inp.request.model_type,
        version=reg.version,
        training_job_id=inp.job_id,
        performance_metrics=perf,
        model_size_mb=trained.model_size_mb,
        deployment_ready=deployment_ready(inp),
        model_name=reg.model_name,
        model_uri=reg.model_uri,
        mlflow_run_id=reg.run_id,
        created_at=inp.finished_at,
        bundle_sha256=reg.bundle_sha256,
    )


def _accuracy(task: Task, split_metrics: dict[str, float]) -> float:
    # Regression has no accuracy: R² plays its part (1 is perfect, like accuracy).
    return float(split_metrics.get("r2" if task is Task.REGRESSION else "accuracy", 0.0))


def build_event(inp: CompleteJobInput, artifact: ModelArtifact) -> TrainingCompletedEvent:
    task, metrics = inp.trained.task, inp.trained.metrics
    minutes = (inp.finished_at - inp.started_at).total_seconds() / 60
    return TrainingCompletedEvent(
        event_id=completed_event_id(inp.job_id),
        timestamp=datetime.now(UTC),
        training_completed=TrainingCompletedData(
            training_job_id=inp.job_id,
            model_id=artifact.model_id,
            model_type=inp.request.model_type.value,
            training_duration_minutes=round(minutes),
            final_accuracy=_accuracy(task, metrics.test_metrics),
            validation_accuracy=_accuracy(task, metrics.validation_metrics),
            hyperparameter_trials=inp.hyperparameter_trials,
            deployment_ready=artifact.deployment_ready,
            performance_improvement=artifact.performance_metrics.performance_improvement or 0.0,
        ),
    )

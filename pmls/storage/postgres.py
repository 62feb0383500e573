"""PostgreSQL command side (asyncpg): jobs, model artifacts, the event outbox, deployment history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from pmls.contracts import (
    DeploymentResult,
    ModelArtifact,
    TrainingCompletedEvent,
    TrainingJob,
    TrainingMetrics,
    TrainingRequest,
    TrainingStatus,
)
from pmls.contracts.deployment import ServedVersion
from pmls.contracts.ids import deployment_event_id


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
    )


def job_from_row(row: asyncpg.Record) -> TrainingJob:
    return TrainingJob(
        job_id=row["job_id"],
        training_request=TrainingRequest.model_validate(row["training_config"]),
        status=TrainingStatus(row["status"]),
        progress_percentage=row["progress_percentage"],
        current_stage=row["current_stage"],
        training_metrics=TrainingMetrics.model_validate(row["training_metrics"])
        if row["training_metrics"]
        else None,
        estimated_completion=row["estimated_completion"],
        created_at=row["started_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
        model_id=row["model_id"],
        error=row["error"],
        started_by=row["started_by"],
        run_id=row["run_id"],
    )


ADMISSION_LOCK = 0x706D6C73  # "pmls": the advisory lock that serialises admissions to RUNNING


class JobStore:
    """``training_jobs``: one row per job, keyed by ``job_id`` (= the Temporal workflow id)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(
        self, *, job_id: str, request: TrainingRequest, request_hash: str, started_by: str | None = None
    ) -> tuple[TrainingJob, bool]:
        """Insert a QUEUED job; return ``(job, created)``. An existing row is returned untouched."""
        row = await self.pool.fetchrow(
            """INSERT INTO training_jobs (job_id, model_type, training_mode, status, training_config, request_hash,
                   started_by)
               VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6)
               ON CONFLICT (job_id) DO NOTHING RETURNING *""",
            job_id,
            request.model_type.value,
            request.training_mode.value,
            request.model_dump(mode="json"),
            request_hash,
            started_by,
        )
        if row is not None:
            return job_from_row(row), True
        existing = await self.pool.fetchrow("SELECT * FROM training_jobs WHERE job_id = $1", job_id)
        return job_from_row(existing), False

    async def requeue_unstarted(
        self, *, job_id: str, request: TrainingRequest, request_hash: str, started_by: str | None = None
    ) -> tuple[TrainingJob, bool]:
        """A job whose workflow never started (FAILED at stage ``starting``) becomes QUEUED again with this
        request; ``(job, True)`` when it did, else the row as it is and False."""
        row = await self.pool.fetchrow(
            """UPDATE training_jobs SET status = 'QUEUED', current_stage = 'queued', progress_percentage = 0,
                   model_type = $2, training_mode = $3, training_config = $4, request_hash = $5,
                   started_by = $6, error = NULL, completed_at = NULL, started_at = now(), updated_at = now()
               WHERE job_id = $1 AND status = 'FAILED' AND current_stage = 'starting' AND run_id IS NULL
               RETURNING *""",
            job_id,
            request.model_type.value,
            request.training_mode.value,
            request.model_dump(mode="json"),
            request_hash,
            started_by,
        )
        if row is not None:
            return job_from_row(row), True
        return await self.get(job_id), False

    async def fail_unstarted(self, job_id: str, reason: str) -> TrainingJob | None:
        """FAIL a job at stage ``starting`` only while no run of its workflow has written it (QUEUED, no run
        id): a repeated request that cannot reach Temporal must not fail a job that is running. Returns the
        row as it now is."""
        row = await self.pool.fetchrow(
            """UPDATE training_jobs SET status = 'FAILED', current_stage = 'starting', progress_percentage = 0,
                   error = $2, completed_at = now(), updated_at = now()
               WHERE job_id = $1 AND status = 'QUEUED' AND run_id IS NULL
               RETURNING *""",
            job_id,
            reason,
        )
        return job_from_row(row) if row else await self.get(job_id)

    async def queued(self, limit: int = 10_000) -> list[TrainingJob]:
        """QUEUED jobs, oldest first: the order in which they get their turn."""
        rows = await self.pool.fetch(
            "SELECT * FROM training_jobs WHERE status = 'QUEUED' ORDER BY started_at, id LIMIT $1", limit
        )
        return [job_from_row(r) for r in rows]

    async def admit(self, job_id: str, limit: int) -> bool | None:
        """Move a QUEUED job to RUNNING if fewer than ``limit`` jobs run and it is among the next in line; one
        admission at a time across the deployment (an advisory lock). True: admitted; False: not yet; None: the
        job is no longer QUEUED (it runs already, or was cancelled)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ADMISSION_LOCK)
            status = await conn.fetchval("SELECT status FROM training_jobs WHERE job_id = $1", job_id)
            if status != TrainingStatus.QUEUED.value:
                return None
            running = await conn.fetchval("SELECT count(*) FROM training_jobs WHERE status = 'RUNNING'")
            if running >= limit:
                return False
            ahead = await conn.fetch(
                "SELECT job_id FROM training_jobs WHERE status = 'QUEUED' ORDER BY started_at, id LIMIT $1",
                limit - running,
            )
            if job_id not in {r["job_id"] for r in ahead}:
                return False
            await conn.execute(
                """UPDATE training_jobs SET status = 'RUNNING', current_stage = 'validating', updated_at = now()
                   WHERE job_id = $1""",
                job_id,
            )
            return True

    async def unstarted(self, older_than_seconds: float) -> list[TrainingJob]:
        """QUEUED rows no workflow has written to for a while (candidates for ghosts: the API stopped between
        the insert and the start)."""
        rows = await self.pool.fetch(
            """SELECT * FROM training_jobs WHERE status = 'QUEUED' AND run_id IS NULL
               AND updated_at < now() - make_interval(secs => $1) ORDER BY started_at LIMIT 1000""",
            float(older_than_seconds),
        )
        return [job_from_row(r) for r in rows]

    async def active_count(self, started_by: str) -> int:
        return await self.pool.fetchval(
            "SELECT count(*) FROM training_jobs WHERE started_by = $1 AND status IN ('QUEUED', 'RUNNING')",
            started_by,
        )

    async def request_hash(self, job_id: str) -> str | None:
        return await self.pool.fetchval("SELECT request_hash FROM training_jobs WHERE job_id = $1", job_id)

    async def get(self, job_id: str) -> TrainingJob | None:
        row = await self.pool.fetchrow("SELECT * FROM training_jobs WHERE job_id = $1", job_id)
        return job_from_row(row) if row else None

    async def list(
        self, *, statuses: list[TrainingStatus] | None = None, limit: int = 100
    ) -> list[TrainingJob]:
        wanted = [s.value for s in statuses] if statuses else [s.value for s in TrainingStatus]
        rows = await self.pool.fetch(
            "SELECT * FROM training_jobs WHERE status = ANY($1::text[]) ORDER BY started_at DESC LIMIT $2",
            wanted,
            limit,
        )
        return [job_from_row(r) for r in rows]

    async def update(
        self,
        *,
        job_id: str,
        status: TrainingStatus,
        stage: str,
        progress: float,
        metrics: TrainingMetrics | None = None,
        error: str | None = None,
        model_id: str | None = None,
        estimated_completion: datetime | None = None,
        run_id: str | None = None,
        run_at: datetime | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> TrainingJob | None:
        """Move a job forward. A terminal status is final: later updates (a retried activity) are ignored.
        ``conn``: inside that connection's transaction (the completion writes the job with its artifact)."""
        # The run that owns the row writes it until the job is finished; another run of the same workflow id
        # (a reset) takes it over, finished or not, when its update is newer than the row's last one.
        row = await (conn or self.pool).fetchrow(
            """UPDATE training_jobs SET status = $2::text, current_stage = $3, progress_percentage = $4,
                   training_metrics = COALESCE($5, training_metrics),
                   error = CASE WHEN run_id IS DISTINCT FROM $9 AND run_id IS NOT NULL THEN $6
                                ELSE COALESCE($6, error) END,
                   model_id = COALESCE($7, model_id), estimated_completion = $8, updated_at = now(),
                   run_id = COALESCE($9, run_id), run_updated_at = COALESCE($10, run_updated_at),
                   completed_at = CASE WHEN $2::text IN ('COMPLETED','FAILED','CANCELLED') THEN now() ELSE NULL END
               WHERE job_id = $1::text AND (
                   (status NOT IN ('COMPLETED','FAILED','CANCELLED')
                    AND ($9::text IS NULL OR run_id IS NULL OR run_id = $9::text))
                   OR ($9::text IS NOT NULL AND run_id IS NOT NULL AND run_id <> $9::text
                       AND $10::timestamptz > COALESCE(run_updated_at, '-infinity'::timestamptz))
                   -- recorded as never started, but the start did reach Temporal: the run owns the row
                   OR ($9::text IS NOT NULL AND run_id IS NULL AND current_stage = 'starting'))
               RETURNING *""",
            job_id,
            status.value,
            stage,
            float(progress),
            metrics.model_dump(mode="json") if metrics else None,
            error,
            model_id,
            estimated_completion,
            run_id,
            run_at,
        )
        return job_from_row(row) if row else await self.get(job_id)


def artifact_from_row(row: asyncpg.Record) -> ModelArtifact:
    return ModelArtifact(
        model_id=row["model_id"],
        model_type=row["model_type"],
        version=row["version"],
        training_job_id=row["training_job_id"],
        performance_metrics=row["performance_metrics"],
        model_size_mb=row["model_size_mb"],
        deployment_ready=row["deployment_ready"],
        model_name=row["model_name"],
        model_uri=row["model_uri"],
        mlflow_run_id=row["mlflow_run_id"],
        created_at=row["created_at"],
        bundle_sha256=row["bundle_sha256"],
    )


class ArtifactStore:
    """``model_artifacts``: one row per registered model version."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, model_id: str) -> ModelArtifact | None:
        row = await self.pool.fetchrow("SELECT * FROM model_artifacts WHERE model_id = $1", model_id)
        return artifact_from_row(row) if row else None

    async def by_version(self, model_name: str, version: str) -> ModelArtifact | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM model_artifacts WHERE model_name = $1 AND version = $2", model_name, version
        )
        return artifact_from_row(row) if row else None

    async def list(self, *, model_name: str | None = None, limit: int = 100) -> list[ModelArtifact]:
        rows = await self.pool.fetch(
            """SELECT * FROM model_artifacts WHERE ($1::text IS NULL OR model_name = $1)
               ORDER BY created_at DESC LIMIT $2""",
            model_name,
            limit,
        )
        return [artifact_from_row(r) for r in rows]


async def upsert_artifact(conn: asyncpg.Connection, artifact: ModelArtifact) -> None:
    await conn.execute(
        """INSERT INTO model_artifacts (model_id, model_type, version, training_job_id, performance_metrics,
               model_size_mb, deployment_ready, model_name, model_uri, mlflow_run_id, bundle_sha256)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (model_id) DO UPDATE SET performance_metrics = EXCLUDED.performance_metrics,
               model_size_mb = EXCLUDED.model_size_mb, deployment_ready = EXCLUDED.deployment_ready""",
        artifact.model_id,
        artifact.model_type.value,
        artifact.version,
        artifact.training_job_id,
        artifact.performance_metrics.model_dump(mode="json"),
        artifact.model_size_mb,
        artifact.deployment_ready,
        artifact.model_name,
        artifact.model_uri,
        artifact.mlflow_run_id,
        artifact.bundle_sha256,
    )


async def add_event(conn: asyncpg.Connection, event: TrainingCompletedEvent, *, aggregate_id: str) -> None:
    """Outbox insert; the event id is deterministic per job, so a retried activity adds nothing."""
    await add_outbox(
        conn, event.event_id, "model_training_completed", aggregate_id, event.model_dump(mode="json")
    )


async def add_outbox(
    conn: asyncpg.Connection, event_id: str, event_type: str, aggregate_id: str, payload: dict[str, Any]
) -> None:
    """One event for the relay to publish, in the caller's transaction; once per ``event_id``."""
    await conn.execute(
        """INSERT INTO event_outbox (event_id, event_type, aggregate_id, payload)
           VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING""",
        uuid.UUID(event_id),
        event_type,
        aggregate_id,
        payload,
    )


class Outbox:
    # One relay at a time, across every worker process: two relays reading the same pending rows would both
    # publish them. A transaction-scoped advisory lock, so a relay that dies releases it with its connection.
    RELAY_LOCK = 0x706D6C73  # "pmls"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def relay(
        self, publish: Callable[[dict[str, Any]], Awaitable[None]], limit: int = 100
    ) -> int | None:
        """Publish the pending events in commit order and mark them, holding the relay lock; stop at the first
        failure of ``publish`` (raised on). None when another relay holds the lock (it publishes these too)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.RELAY_LOCK):
                return None
            rows = await conn.fetch(
                """SELECT id, event_id, event_type, payload FROM event_outbox
                   WHERE published_at IS NULL ORDER BY id LIMIT $1""",
                limit,
            )
            sent: list[int] = []
            failure: Exception | None = None
            try:
                for row in rows:
                    await publish(dict(row))
                    sent.append(row["id"])
            except Exception as exc:  # noqa: BLE001 - raised below, once what was sent is marked and committed
                failure = exc
            if sent:
                await conn.execute(
                    "UPDATE event_outbox SET published_at = now() WHERE id = ANY($1::bigint[])", sent
                )
        if failure is not None:
            raise failure
        return len(sent)


class DeploymentStore:
    """``deployments``: the served-when history of every lineage (promotions, rejections, rollbacks)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, result: DeploymentResult, event_type: str) -> None:
        """The history row and its event (``event_type`` on ``pmls:events`` once relayed), one transaction;
        both keyed by the deployment id, so a retry adds nothing."""
        payload = {
            "event_id": deployment_event_id(event_type, result.deployment_id),
            "event_type": event_type,
            "timestamp": datetime.now(UTC).isoformat(),
            "deployment": result.model_dump(mode="json"),
        }
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO deployments (deployment_id, model_id, model_name, version, target, alias, status,
                       previous_model_id, message, deployed_at, deployed_by, action, job_id, gates, forced, reason,
                       smoke_test, serving_version)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
                   ON CONFLICT (deployment_id) DO NOTHING""",
                result.deployment_id,
                result.model_id,
                result.model_name,
                result.version,
                result.target,
                result.alias,
                result.status,
                result.previous_model_id,
                result.message,
                result.deployed_at,
                result.deployed_by,
                result.action,
                result.job_id,
                [g.model_dump(mode="json") for g in result.gates],
                result.forced,
                result.reason,
                result.smoke_test,
                result.serving_version,
            )
            await add_outbox(conn, payload["event_id"], event_type, result.model_name, payload)

    async def history(self, model_name: str, limit: int = 50) -> list[DeploymentResult]:
        rows = await self.pool.fetch(
            "SELECT * FROM deployments WHERE model_name = $1 ORDER BY deployed_at DESC, id LIMIT $2",
            model_name,
            limit,
        )
        return [_deployment(r) for r in rows]

    async def served_at(self, model_name: str, alias: str, at: datetime) -> ServedVersion | None:
        """The version the alias served at ``at``: the last change of it (a promotion, a rollback, an automatic
        rollback after a failed smoke test) at or before then."""
        row = await self.pool.fetchrow(
            """SELECT d.*, a.model_id AS served_model_id FROM deployments d
               LEFT JOIN model_artifacts a ON a.model_name = d.model_name AND a.version = d.serving_version
               WHERE d.model_name = $1 AND d.alias = $2 AND d.deployed_at <= $3
                 AND d.status IN ('DEPLOYED', 'ROLLED_BACK')
               ORDER BY d.deployed_at DESC, d.id DESC LIMIT 1""",
            model_name,
            alias,
            at,
        )
        if row is None or row["serving_version"] is None:
            return None
        return ServedVersion(
            model_name=model_name,
            alias=alias,
            at=at,
            version=row["serving_version"],
            model_id=row["served_model_id"],
            since=row["deployed_at"],
            deployment_id=row["deployment_id"],
            action=row["action"],
        )


def _deployment(row: asyncpg.Record) -> DeploymentResult:
    return DeploymentResult.model_validate({k: row[k] for k in DeploymentResult.model_fields})


class LocalServingStore:
    """``local_serving``: the version the `local` target must serve, per lineage and alias."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def set(self, model_name: str, alias: str, version: str | None) -> None:
        if version is None:
            await self.pool.execute(
                "DELETE FROM local_serving WHERE model_name = $1 AND alias = $2", model_name, alias
            )
            return
        await self.pool.execute(
            """INSERT INTO local_serving (model_name, alias, version) VALUES ($1, $2, $3)
               ON CONFLICT (model_name, alias) DO UPDATE SET version = EXCLUDED.version, updated_at = now()""",
            model_name,
            alias,
            version,
        )

    async def get(self, model_name: str, alias: str) -> str | None:
        return await self.pool.fetchval(
            "SELECT version FROM local_serving WHERE model_name = $1 AND alias = $2", model_name, alias
        )

    async def wanted(self) -> list[tuple[str, str, str, str | None]]:
        """(lineage, alias, version, the version's bundle hash) for everything the target must serve."""
        rows = await self.pool.fetch(
            """SELECT s.model_name, s.alias, s.version, a.bundle_sha256 FROM local_serving s
               LEFT JOIN model_artifacts a ON a.model_name = s.model_name AND a.version = s.version"""
        )
        return [(r["model_name"], r["alias"], r["version"], r["bundle_sha256"]) for r in rows]


class ExperimentStore:
    """``hyperparameter_experiments``, read: one row per trial, keyed by ``{job}/{family}/trial-{n}`` (written by
    ``pmls.storage.trial_rows`` where the trial is told)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self, job_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT experiment_id, training_job_id, hyperparameters, performance_score, trial_number,
                      experiment_duration_minutes, model_type, state, created_at
               FROM hyperparameter_experiments WHERE training_job_id = $1 ORDER BY model_type, trial_number""",
            job_id,
        )
        return [_experiment(r) for r in rows]


def _experiment(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    score = out["performance_score"]
    out["performance_score"] = None if score is None or score != score else score  # NaN: no score
    out["created_at"] = out["created_at"].isoformat()
    return out

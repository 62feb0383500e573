"""Redis cache with the seed's keys and TTLs. Redis is only a cache: every failure degrades to a miss.

After a failure the cache stays quiet for a few seconds, so a Redis outage costs a request at most one
short socket timeout instead of one per call.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pmls.contracts import ModelArtifact, TrainingJob, TrainingRequest

log = logging.getLogger("pmls.cache")

DAY = 24 * 3600
EVENTS_STREAM = "pmls:events"


def status_key(job_id: str) -> str:
    return f"training_status:{job_id}"


def artifact_key(model_id: str) -> str:
    return f"model_artifacts:{model_id}"


def experiments_key(job_id: str) -> str:
    return f"hyperparameter_experiments:{job_id}"


QUEUE_KEY = "training_queue"
QUEUE_TTL = 3600


class Cache:
    def __init__(self, url: str, *, timeout: float = 0.5, quiet_seconds: float = 5.0) -> None:
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._quiet_until = 0.0
        self._quiet_seconds = quiet_seconds
        # Jobs whose last status write this process skipped (Redis failed, or the cache was quiet): what Redis
        # holds for them may be older than PostgreSQL (a FAILED job sent again and now QUEUED): see maybe_stale.
        self._unwritten: set[str] = set()

    async def close(self) -> None:
        await self.client.aclose()

    async def _safe(self, what: str, op: Any) -> Any:
        if time.monotonic() < self._quiet_until:
            return None
        try:
            return await op
        except (RedisError, OSError) as exc:
            self._quiet_until = time.monotonic() + self._quiet_seconds
            log.warning("redis unavailable (%s: %s); serving without the cache", what, exc)
            return None
        finally:
            if hasattr(op, "close"):
                op.close()  # an un-awaited coroutine when we skipped it

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    def maybe_stale(self, job_id: str) -> bool:
        """This process skipped the job's last status write: Redis may hold an older status than PostgreSQL."""
        return job_id in self._unwritten

    async def get_job(self, job_id: str) -> TrainingJob | None:
        raw = await self._safe("get job", self.client.get(status_key(job_id)))
        return TrainingJob.model_validate_json(raw) if raw else None

    async def set_job(self, job: TrainingJob) -> None:
        written = await self._safe(
            "set job", self.client.set(status_key(job.job_id), job.model_dump_json(), ex=DAY)
        )
        if written:
            self._unwritten.discard(job.job_id)
        else:
            self._unwritten.add(job.job_id)

    async def get_artifact(self, model_id: str) -> ModelArtifact | None:
        raw = await self._safe("get artifact", self.client.get(artifact_key(model_id)))
        return ModelArtifact.model_validate_json(raw) if raw else None

    async def set_artifact(self, artifact: ModelArtifact) -> None:
        await self._safe(
            "set artifact",
            self.client.set(artifact_key(artifact.model_id), artifact.model_dump_json(), ex=DAY),
        )

    async def set_experiments(self, job_id: str, trials: list) -> None:
        payload = "[" + ",".join(t.model_dump_json() for t in trials) + "]"
        await self._safe("set experiments", self.client.set(experiments_key(job_id), payload, ex=DAY))

    async def get_experiments(self, job_id: str) -> list | None:
        from pmls.contracts.experiments import HyperparameterExperiment

        raw = await self._safe("get experiments", self.client.get(experiments_key(job_id)))
        if not raw:
            return None
        import json

        return [HyperparameterExperiment.model_validate(item) for item in json.loads(raw)]

    async def enqueue(self, job_id: str, request: TrainingRequest) -> None:
        """``training_queue``: the QUEUED jobs' requests, oldest first (PostgreSQL's QUEUED rows are the truth;
        the training worker rebuilds this list from them every few seconds, see ``replace_queue``)."""
        entry = request.model_copy(update={"training_id": job_id}).model_dump_json()
        await self._safe("enqueue", self._push(entry))

    async def _push(self, entry: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            # The TTL (SPEC: 1 h) is set when the list appears, not renewed by every push.
            await pipe.rpush(QUEUE_KEY, entry).expire(QUEUE_KEY, QUEUE_TTL, nx=True).execute()

    async def dequeue(self, job_id: str) -> None:
        await self._safe("dequeue", self._remove(job_id))

    async def _remove(self, job_id: str) -> None:
        for entry in await self.client.lrange(QUEUE_KEY, 0, -1):
            if TrainingRequest.model_validate_json(entry).training_id == job_id:
                await self.client.lrem(QUEUE_KEY, 0, entry)

    async def replace_queue(self, requests: list[TrainingRequest]) -> None:
        """Rewrite ``training_queue`` in one transaction: heals whatever a Redis outage or a crash left."""
        entries = [r.model_dump_json() for r in requests]

        async def rewrite() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(QUEUE_KEY)
                if entries:
                    pipe.rpush(QUEUE_KEY, *entries).expire(QUEUE_KEY, QUEUE_TTL)
                await pipe.execute()

        await self._safe("replace queue", rewrite())

    async def queue(self) -> list[TrainingRequest] | None:
        raw = await self._safe("read queue", self.client.lrange(QUEUE_KEY, 0, -1))
        return None if raw is None else [TrainingRequest.model_validate_json(e) for e in raw]

    async def publish_event(self, event_id: str, event_type: str, payload: str) -> bool:
        """XADD onto ``pmls:events``; raises on failure so the relay retries (at least once)."""
        await self.client.xadd(
            EVENTS_STREAM,
            {"event_id": event_id, "event_type": event_type, "payload": payload},
            maxlen=100_000,
            approximate=True,
        )
        return True

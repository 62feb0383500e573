"""Trial rows (``hyperparameter_experiments``) written where a trial is told, from a trial slot's thread.

The study (Optuna, PostgreSQL) is the source of truth for a trial; its row in the service database is the
seed's listing of it. The slot that tells a trial writes its row at once (an upsert: a retried batch writes
the same row again), and drops the job's cached listing in Redis, which the API fills again on a miss.
"""

from __future__ import annotations

import json
import logging
import math
import time

import redis
import sqlalchemy as sa
from redis.exceptions import RedisError

from pmls.contracts import ModelType
from pmls.contracts.tuning import TrialResult, trial_key
from pmls.storage.cache import experiments_key

log = logging.getLogger("pmls.trial_rows")

UPSERT = sa.text(
    """INSERT INTO hyperparameter_experiments (experiment_id, training_job_id, hyperparameters,
           performance_score, trial_number, experiment_duration_minutes, model_type, state)
       VALUES (:experiment_id, :training_job_id, CAST(:hyperparameters AS jsonb), :performance_score,
           :trial_number, :experiment_duration_minutes, :model_type, :state)
       ON CONFLICT (experiment_id) DO UPDATE SET performance_score = EXCLUDED.performance_score,
           experiment_duration_minutes = EXCLUDED.experiment_duration_minutes, state = EXCLUDED.state"""
)


def trial_row(job_id: str, family: ModelType, result: TrialResult) -> dict:
    score = result.score if result.score is not None else math.nan  # the seed's column is NOT NULL
    return {
        "experiment_id": trial_key(job_id, family, result.number),
        "training_job_id": job_id,
        "hyperparameters": result.params,
        "performance_score": float(score),
        "trial_number": result.number,
        "experiment_duration_minutes": result.duration_seconds / 60,
        "model_type": family.value,
        "state": result.state,
    }


class TrialRows:
    """Synchronous (trial slots are threads): one small pooled engine, one Redis client with short timeouts."""

    def __init__(self, database_url: str, redis_url: str, *, redis_timeout: float = 0.5) -> None:
        self.engine = sa.create_engine(
            database_url.replace("postgresql://", "postgresql+psycopg2://", 1),
            pool_size=1,
            max_overflow=4,
            pool_pre_ping=True,
        )
        self.redis = redis.Redis.from_url(
            redis_url, socket_timeout=redis_timeout, socket_connect_timeout=redis_timeout
        )
        self._quiet_until = 0.0

    def write(self, job_id: str, family: ModelType, results: list[TrialResult]) -> None:
        """Upsert the trials' rows (an error propagates: the activity retries), then drop the cached listing."""
        if not results:
            return
        rows = [trial_row(job_id, family, r) for r in results]
        with self.engine.begin() as conn:
            conn.execute(UPSERT, [r | {"hyperparameters": json.dumps(r["hyperparameters"])} for r in rows])
        self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        # Redis is a cache: down, it costs one short timeout every few seconds, never the trial.
        if time.monotonic() < self._quiet_until:
            return
        try:
            self.redis.delete(experiments_key(job_id))
        except (RedisError, OSError) as exc:
            self._quiet_until = time.monotonic() + 5.0
            log.warning("redis unavailable (drop trial listing): %s", exc)

    def close(self) -> None:
        self.engine.dispose()
        self.redis.close()

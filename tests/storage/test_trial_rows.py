"""Trial rows on the real PostgreSQL and Redis: written where the trial is told, once per trial however often a
retried batch writes it, and the API's cached listing of the job dropped so that it is read anew."""

from __future__ import annotations

import asyncio

import redis

from pmls.contracts.enums import ModelType
from pmls.contracts.tuning import TrialResult
from pmls.storage.cache import experiments_key
from pmls.storage.postgres import ExperimentStore, create_pool
from pmls.storage.trial_rows import TrialRows
from tests.helpers import unique


def _rows(settings, job_id: str) -> list[dict]:
    async def read() -> list[dict]:
        pool = await create_pool(settings.database.url)
        try:
            return await ExperimentStore(pool).list(job_id)
        finally:
            await pool.close()

    return asyncio.run(read())


def test_a_trial_written_again_is_one_row_with_its_last_state_and_the_cached_listing_is_dropped(settings):
    job_id, rows = unique("rows"), TrialRows(settings.database.url, settings.redis.url)
    cache = redis.Redis.from_url(settings.redis.url)
    try:
        cache.set(experiments_key(job_id), "[]", ex=60)  # a listing cached before the trial finished
        told = TrialResult(
            number=0, state="COMPLETE", params={"num_leaves": 31}, score=0.8, duration_seconds=6
        )
        cancelled = TrialResult(number=1, state="CANCELLED", params={"num_leaves": 7})
        rows.write(job_id, ModelType.LIGHTGBM, [told, cancelled])
        assert cache.get(experiments_key(job_id)) is None
        # A retried batch writes its told trial again; a settled trial's row takes its final state.
        rows.write(job_id, ModelType.LIGHTGBM, [told, cancelled.model_copy(update={"state": "FAILED"})])

        stored = _rows(settings, job_id)
        assert [(r["experiment_id"], r["state"]) for r in stored] == [
            (f"{job_id}/lightgbm/trial-0", "COMPLETE"),
            (f"{job_id}/lightgbm/trial-1", "FAILED"),
        ]
        assert stored[0]["hyperparameters"] == {"num_leaves": 31} and stored[0]["performance_score"] == 0.8
        assert stored[1]["performance_score"] is None  # no score: stored as NaN, read as none
    finally:
        rows.close()
        cache.close()


def test_rows_are_written_while_redis_is_down(settings):
    job_id = unique("rows")
    rows = TrialRows(settings.database.url, "redis://127.0.0.1:9/0", redis_timeout=0.2)  # nothing listens
    try:
        rows.write(job_id, ModelType.XGBOOST, [TrialResult(number=3, state="PRUNED", params={}, score=0.5)])
    finally:
        rows.close()
    assert [r["trial_number"] for r in _rows(settings, job_id)] == [3]

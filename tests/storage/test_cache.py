"""The Redis cache on the real server: a status write it had to skip is known, so an older status is not
trusted as final."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from pmls.contracts import TrainingJob, TrainingRequest, TrainingStatus
from pmls.storage.cache import Cache
from tests.helpers import unique


def test_a_skipped_status_write_is_not_answered_from_the_stale_entry(settings, demo_request):
    job_id = unique("stale")
    request = TrainingRequest.model_validate(demo_request(job_id))

    def job(status: TrainingStatus) -> TrainingJob:
        return TrainingJob(
            job_id=job_id,
            training_request=request,
            status=status,
            progress_percentage=0.0,
            current_stage="starting" if status is TrainingStatus.FAILED else "queued",
            created_at=datetime.now(UTC),
        )

    async def scenario() -> tuple[TrainingJob | None, TrainingJob | None, TrainingJob | None]:
        cache = Cache(settings.redis.url, timeout=5.0)
        try:
            await cache.set_job(job(TrainingStatus.FAILED))  # the job could not start
            cache._quiet_until = time.monotonic() + 60  # then Redis timed out: the cache is quiet
            await cache.set_job(job(TrainingStatus.QUEUED))  # sent again: this write is skipped
            cache._quiet_until = 0.0  # Redis answers again
            stale = cache.maybe_stale(job_id), await cache.get_job(job_id)
            fresh_process = Cache(settings.redis.url, timeout=5.0)
            other = await fresh_process.get_job(job_id)
            await fresh_process.close()
            await cache.set_job(job(TrainingStatus.QUEUED))  # the next write lands
            return stale, other, (cache.maybe_stale(job_id), await cache.get_job(job_id))
        finally:
            await cache.close()

    stale, other, fresh = asyncio.run(scenario())
    # The FAILED entry is still there, and known to be possibly older than PostgreSQL: the API reads PostgreSQL.
    assert stale[0] is True and stale[1].status is TrainingStatus.FAILED
    assert other is not None and other.status is TrainingStatus.FAILED  # what Redis really holds
    assert fresh[0] is False and fresh[1].status is TrainingStatus.QUEUED

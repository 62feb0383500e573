"""A truthful training queue: with PMLS_MAX_RUNNING_JOBS=1 (a second API process on the test stack), three jobs
run one at a time, oldest first; `GET /api/v1/training/queue` and Redis's `training_queue` list exactly the
waiting ones in that order, and the Redis list heals itself after it is lost."""

from __future__ import annotations

import time

import pytest
import redis

from pmls.contracts import TrainingRequest
from tests.helpers import extra_api, unique, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def limited_api(stack, api):
    with extra_api(stack, api.headers, {"PMLS_MAX_RUNNING_JOBS": "1"}) as client:
        yield client


def _redis_queue(stack) -> list[str]:
    client = redis.Redis.from_url(stack.settings.redis.url, decode_responses=True)
    return [
        TrainingRequest.model_validate_json(e).training_id for e in client.lrange("training_queue", 0, -1)
    ]


def test_jobs_wait_their_turn_oldest_first(stack, limited_api, demo_request):
    ids = [unique(f"turn{i}") for i in range(3)]
    for job_id in ids:
        assert limited_api.post("/api/v1/training/start", json=demo_request(job_id)).status_code == 202

    # The first runs; the other two wait, in order, in the API's queue and in Redis's list.
    deadline = time.monotonic() + 60
    while True:
        queue = [q["job_id"] for q in limited_api.get("/api/v1/training/queue").json()]
        first = limited_api.get(f"/api/v1/training/{ids[0]}/status").json()["status"]
        if first == "RUNNING" and queue == ids[1:] and _redis_queue(stack) == ids[1:]:
            break
        assert time.monotonic() < deadline, (first, queue, _redis_queue(stack))
        time.sleep(0.3)
    positions = [q["position"] for q in limited_api.get("/api/v1/training/queue").json()]
    assert positions == [1, 2]

    # Lost (a Redis restart without persistence): the training worker rebuilds it within seconds.
    redis.Redis.from_url(stack.settings.redis.url).delete("training_queue")
    deadline = time.monotonic() + 30
    while _redis_queue(stack) == [] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _redis_queue(stack) in (ids[1:], ids[2:])  # the second may have started meanwhile

    # Never two at once, and in order.
    seen_running = []
    while True:
        statuses = {j: limited_api.get(f"/api/v1/training/{j}/status").json()["status"] for j in ids}
        running = [j for j, s in statuses.items() if s == "RUNNING"]
        assert len(running) <= 1, statuses
        if running and running[0] not in seen_running:
            seen_running.append(running[0])
        if all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in statuses.values()):
            break
        time.sleep(0.2)
    jobs = [wait_for(limited_api, j) for j in ids]
    assert [j["status"] for j in jobs] == ["COMPLETED"] * 3
    # In order (a job may finish between two samples, so it can be missing from what was seen, never out of turn).
    assert seen_running == [j for j in ids if j in seen_running]
    assert jobs[0]["completed_at"] < jobs[1]["completed_at"] < jobs[2]["completed_at"]
    assert limited_api.get("/api/v1/training/queue").json() == [] and _redis_queue(stack) == []

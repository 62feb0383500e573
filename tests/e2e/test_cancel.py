"""Cancellation by the API (Temporal's own cancel) and by the workflow's signal both end in CANCELLED,
and they stop training that is already running."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pmls.contracts.temporal import CANCEL_SIGNAL
from tests.helpers import temporal, unique, wait_for

# A job that would train for minutes: a tiny learning rate, the most rounds allowed, early stopping out of reach.
SLOW = {
    "hyperparameter_config": {
        "optimization_method": "none",
        "search_space": {
            "learning_rate": {"type": "float", "low": 0.0005, "high": 0.0005},
            "num_leaves": {"type": "int", "low": 255, "high": 255},
            # The most rounds a request may ask for; at this learning rate validation keeps improving, so early
            # stopping never ends it: minutes of training.
            "num_boost_round": {"type": "int", "low": 20000, "high": 20000},
            "early_stopping_rounds": {"type": "int", "low": 1000, "high": 1000},
        },
    }
}


@pytest.fixture(scope="module")
def slow_request(demo_request, tmp_path_factory):
    from pmls.ml.demo_data import generate_demo_dataset

    data = generate_demo_dataset(Path(tmp_path_factory.mktemp("slow")) / "big.parquet", rows_per_day=60)

    def build(job_id: str) -> dict:
        body = demo_request(job_id, **SLOW)
        body["dataset_config"]["source"] = str(data)
        return body

    return build


def _start_and_reach_training(api, body) -> str:
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    busy = {"cross_validating", "training"}  # both fit models round by round
    wait_for(
        api,
        body["training_id"],
        until=lambda j: j["current_stage"] in busy or j["status"] != "RUNNING" and j["status"] != "QUEUED",
        timeout=120,
    )
    time.sleep(2)  # let a few boosting rounds run: the cancel must interrupt real training
    return body["training_id"]


def _no_pending_activities(settings, job_id: str) -> bool:
    """No activity left running, within a few seconds: the job row says CANCELLED as soon as the activity that
    records it has written it, a moment before Temporal sees that activity complete."""

    async def settled(client):
        for _ in range(40):
            description = await client.get_workflow_handle(job_id).describe()
            if not description.raw_description.pending_activities:
                return True
            await asyncio.sleep(0.25)
        return False

    return temporal(settings, settled)


def _temporal_status(settings, job_id: str) -> str:
    """The execution's status once it has closed (the job row is written a moment before)."""

    async def status(client):
        for _ in range(40):
            name = (await client.get_workflow_handle(job_id).describe()).status.name
            if name != "RUNNING":
                return name
            await asyncio.sleep(0.25)
        return name

    return temporal(settings, status)


def test_cancel_through_the_api_stops_training(api, settings, slow_request):
    job_id = _start_and_reach_training(api, slow_request(unique("cancel_api")))
    started = time.monotonic()
    resp = api.post(f"/api/v1/training/{job_id}/cancel")
    assert resp.status_code == 200 and resp.json()["cancelled"] is True
    job = wait_for(api, job_id, timeout=60)
    assert job["status"] == "CANCELLED"
    assert time.monotonic() - started < 30
    assert _no_pending_activities(settings, job_id)  # the training activity really ended
    assert _temporal_status(settings, job_id) == "CANCELED"
    again = api.post(f"/api/v1/training/{job_id}/cancel").json()
    assert again["cancelled"] is False and again["status"] == "CANCELLED"


def test_cancel_signal_stops_training(api, settings, slow_request):
    job_id = _start_and_reach_training(api, slow_request(unique("cancel_signal")))

    async def signal(client):
        await client.get_workflow_handle(job_id).signal(CANCEL_SIGNAL, "no longer needed")

    temporal(settings, signal)
    job = wait_for(api, job_id, timeout=60)
    assert job["status"] == "CANCELLED"
    assert job["error"] == "no longer needed"
    assert _no_pending_activities(settings, job_id)
    # The signal becomes Temporal's own cancel: the Temporal UI and CLI show the execution Cancelled too.
    assert _temporal_status(settings, job_id) == "CANCELED"


def test_job_timeout_bounds_every_stage(api, settings, slow_request):
    """job_timeout is the whole job's deadline, not only the search's: a fit that would run for minutes is
    stopped when it passes, and the job FAILS with a reason naming the stage and the deadline."""
    body = slow_request(unique("deadline"))
    body["job_timeout"] = "1m"
    job_id = _start_and_reach_training(api, body)
    started = time.monotonic()
    job = wait_for(api, job_id, timeout=120)
    assert job["status"] == "FAILED", job
    assert "job_timeout" in job["error"] and "(1m)" in job["error"], job["error"]
    assert job["current_stage"] in ("cross_validating", "training") and job["current_stage"] in job["error"]
    assert time.monotonic() - started < 75  # the minute from the start, not the minutes the fit would take
    assert _no_pending_activities(settings, job_id)  # the fit itself was stopped
    assert _temporal_status(settings, job_id) == "FAILED"


def test_temporal_cli_cancel_shows_as_cancelled(api, settings, slow_request):
    import subprocess

    from pmls.stack import _temporal_cli

    job_id = _start_and_reach_training(api, slow_request(unique("cancel_cli")))
    subprocess.run(
        [_temporal_cli(), "workflow", "cancel", "-w", job_id, "--address", settings.temporal.address],
        check=True,
        capture_output=True,
        timeout=30,
    )
    assert wait_for(api, job_id, timeout=60)["status"] == "CANCELLED"


def test_a_run_terminated_outside_the_service_is_reconciled(api, settings, slow_request):
    """`temporal workflow terminate` closes the run without the workflow's code running: the job row (the source
    of truth, read from PostgreSQL) is moved to FAILED by the training worker's reconciler, not left RUNNING."""
    from pmls.storage.postgres import JobStore, create_pool

    job_id = _start_and_reach_training(api, slow_request(unique("terminate")))

    async def row():
        pool = await create_pool(settings.database.url)
        try:
            return await JobStore(pool).get(job_id)
        finally:
            await pool.close()

    assert asyncio.run(row()).status.value == "RUNNING"  # the fault hits a job at work

    async def terminate(client):
        await client.get_workflow_handle(job_id).terminate("operator pulled the plug")

    temporal(settings, terminate)
    deadline, job = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        job = asyncio.run(row())
        if job.status.is_terminal:
            break
        time.sleep(0.5)
    assert job.status.value == "FAILED", job
    assert job.error == "workflow terminated outside the service"
    shown = api.get(f"/api/v1/training/{job_id}/status").json()
    assert shown["status"] == "FAILED" and shown["error"] == job.error

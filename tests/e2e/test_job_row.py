"""The job row tells the truth about the workflow: it follows `temporal workflow reset` to the new run, and a job
whose workflow could not be started is recorded FAILED with its reason (never a QUEUED ghost), its id free for
the request to be sent again."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from pmls.stack import _temporal_cli
from tests.helpers import temporal, unique, wait_for

pytestmark = pytest.mark.slow


def _run_id(settings, job_id: str) -> str:
    async def describe(client):
        return (await client.get_workflow_handle(job_id).describe()).run_id

    return temporal(settings, describe)


def test_a_reset_job_goes_back_to_running_and_completes(api, settings, demo_request, demo_data, tmp_path):
    job_id = unique("reset")
    missing = tmp_path / "arrives_later.parquet"
    body = demo_request(job_id)
    body["dataset_config"]["source"] = str(missing)
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    failed = wait_for(api, job_id, timeout=120)
    assert failed["status"] == "FAILED" and "dataset_config.source" in failed["error"], failed
    first_run = failed["run_id"]
    assert first_run == _run_id(settings, job_id)

    # The operator fixes the data and re-runs the job from its start with the Temporal CLI.
    shutil.copy(demo_data, missing)
    subprocess.run(
        [
            _temporal_cli(),
            "workflow",
            "reset",
            "-w",
            job_id,
            "--type",
            "FirstWorkflowTask",
            "--reason",
            "data",
            "--address",
            settings.temporal.address,
            "--namespace",
            settings.temporal.temporal_namespace,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    new_run = _run_id(settings, job_id)
    assert new_run != first_run
    job = wait_for(
        api,
        job_id,
        until=lambda j: j["run_id"] == new_run and j["status"] in ("COMPLETED", "FAILED", "CANCELLED"),
        timeout=240,
    )
    assert job["status"] == "COMPLETED", job
    assert job["run_id"] == new_run and job["error"] is None and job["model_id"]
    artifact = api.get(f"/api/v1/models/artifacts/{job['model_id']}").json()
    assert artifact["training_job_id"] == job_id


def test_a_start_that_cannot_reach_temporal_is_failed_and_can_be_sent_again(api, stack, demo_request):
    if not stack.settings.temporal.embedded:
        pytest.skip("Temporal is external (PMLS_TEMPORAL_ADDRESS)")
    job_id = unique("ghost")
    stack.pause("temporal")
    try:
        resp = api.post("/api/v1/training/start", json=demo_request(job_id), timeout=120)
        assert resp.status_code == 503, resp.text
        assert "Temporal is unavailable" in resp.json()["message"]
        row = api.get(f"/api/v1/training/{job_id}/status").json()
        assert row["status"] == "FAILED" and "send the request again" in row["error"], row
    finally:
        stack.resume("temporal")
    # Once Temporal is back, the same id with a corrected body starts (no 409: nothing ran under it).
    corrected = demo_request(job_id, random_seed=7)
    deadline = time.monotonic() + 60
    while True:
        resp = api.post("/api/v1/training/start", json=corrected)
        if resp.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert resp.status_code == 202, resp.text
    job = wait_for(api, job_id, timeout=180)
    assert job["status"] == "COMPLETED", (job["current_stage"], job["error"], job["run_id"])
    assert job["training_request"]["random_seed"] == 7


def test_a_repeated_start_during_a_temporal_outage_leaves_the_running_job_alone(api, stack, demo_request):
    if not stack.settings.temporal.embedded:
        pytest.skip("Temporal is external (PMLS_TEMPORAL_ADDRESS)")
    job_id = unique("repeat")
    body = demo_request(
        job_id, hyperparameter_config={"optimization_method": "random", "optimization_trials": 6}
    )
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    wait_for(api, job_id, until=lambda j: j["status"] == "RUNNING", timeout=60)
    stack.pause("temporal")
    try:
        # The client sends its request again (its first answer was lost): Temporal cannot confirm the start.
        resp = api.post("/api/v1/training/start", json=body, timeout=120)
        assert resp.status_code == 503, resp.text
        row = api.get(f"/api/v1/training/{job_id}/status").json()
        assert row["status"] == "RUNNING" and row["error"] is None, row
    finally:
        stack.resume("temporal")
    job = wait_for(api, job_id, timeout=240)
    assert job["status"] == "COMPLETED", job

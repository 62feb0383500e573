"""A search survives a Temporal restart: the job completes with exactly the requested number of finished trials, no
duplicate trial numbers, no result lost. (Killed workers, PostgreSQL, MLflow and Redis outages: test_faults.py,
test_resilience.py.)"""

from __future__ import annotations

import time

import pytest

from tests.helpers import unique, wait_for

pytestmark = pytest.mark.slow
TRIALS = 12


def _start_search(api, demo_request, prefix: str) -> str:
    job_id = unique(prefix)
    body = demo_request(
        job_id,
        hyperparameter_config={
            "optimization_method": "tpe",
            "optimization_trials": TRIALS,
            "optimization_timeout": "10m",
        },
    )
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    # Mid-search: a few trials recorded, others still to come.
    wait_for(
        api,
        job_id,
        until=lambda j: len(api.get(f"/api/v1/training/{job_id}/trials").json()) >= 2,
        timeout=180,
    )
    return job_id


def _assert_exact_trials(api, job_id: str) -> None:
    job = wait_for(api, job_id, timeout=400)
    assert job["status"] == "COMPLETED", job.get("error")
    trials = api.get(f"/api/v1/training/{job_id}/trials").json()
    numbers = [t["trial_number"] for t in trials]
    assert sorted(numbers) == list(range(TRIALS)), numbers
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in trials), [t["state"] for t in trials]


def test_search_survives_a_temporal_restart(api, stack, demo_request):
    if not stack.settings.temporal.embedded:
        pytest.skip("Temporal is external (PMLS_TEMPORAL_ADDRESS)")
    job_id = _start_search(api, demo_request, "restart_temporal")
    stack.pause("temporal")
    time.sleep(2)
    stack.resume("temporal")
    _assert_exact_trials(api, job_id)

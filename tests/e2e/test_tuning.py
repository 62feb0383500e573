"""Durable hyperparameter optimisation on the real stack, with tiny budgets."""

from __future__ import annotations

import asyncio
import time

import redis

from pmls.contracts.temporal import MEMO_TRIAL_SLOTS, MEMO_TRIALS_PER_RUN, MEMO_TRIALS_QUEUE
from tests.helpers import mlflow_runs, temporal, unique, wait_for
from workflows.training import TrainingWorkflow


def tuned(demo_request, job_id: str, **hp) -> dict:
    return demo_request(
        job_id,
        hyperparameter_config={
            "optimization_method": "tpe",
            "optimization_trials": 10,
            "optimization_timeout": "10m",
            **hp,
        },
    )


def test_search_runs_exactly_the_requested_trials_and_records_each(api, stack, settings, demo_request):
    stack.wait_for_workers()  # an earlier test may have killed a trials worker: its successor must be polling
    job_id = unique("tune")
    assert api.post("/api/v1/training/start", json=tuned(demo_request, job_id)).status_code == 202
    job = wait_for(api, job_id, timeout=300)
    assert job["status"] == "COMPLETED", job.get("error")
    trials = api.get(f"/api/v1/training/{job_id}/trials").json()
    assert sorted(t["trial_number"] for t in trials) == list(range(10))  # no duplicate, none lost
    assert {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert complete and all(t["performance_score"] is not None for t in complete)
    # The study starts from the family's portfolio: trial 0 is its first configuration.
    assert trials[0]["hyperparameters"]["num_leaves"] == 31
    # The final model's CV scores are the best complete trial's.
    best = max(t["performance_score"] for t in complete)
    scores = job["training_metrics"]["cross_validation_scores"]
    assert abs(sum(scores) / len(scores) - best) < 1e-9
    cache = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    assert cache.ttl(f"hyperparameter_experiments:{job_id}") > 23 * 3600
    parent, nested = mlflow_runs(settings, job_id)
    assert len(nested) == 10 and parent.info.status == "FINISHED"
    assert sorted(r.data.tags["pmls.trial"] for r in nested) == sorted(
        f"lightgbm/trial-{n}" for n in range(10)
    )
    events = [
        e
        for _, e in cache.xrange("pmls:events")
        if e["event_type"] == "model_training_completed" and job_id in e["payload"]
    ]
    assert '"hyperparameter_trials":10' in events[0]["payload"].replace(" ", "")
    if settings.worker.processes >= 2:
        # One trials worker per slot: the two batches started at once ran in two processes, not two threads of one.
        assert len(_batch_workers(settings, f"{job_id}/lightgbm")) >= 2


def _batch_workers(settings, workflow_id: str) -> set[str]:
    """The identities of the workers that started the search's trial batches."""

    async def identities(client) -> set[str]:
        scheduled, started = {}, set()
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.HasField("activity_task_scheduled_event_attributes"):
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.HasField("activity_task_started_event_attributes"):
                attrs = event.activity_task_started_event_attributes
                if scheduled.get(attrs.scheduled_event_id) == "run_trials":
                    started.add(attrs.identity)
        return started

    return temporal(settings, identities)


def test_time_budget_stops_the_search_and_the_job_still_completes(api, demo_request):
    job_id = unique("budget")
    body = tuned(demo_request, job_id, optimization_trials=10000, optimization_timeout="15s")
    started = time.monotonic()
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, job_id, timeout=180)
    elapsed = time.monotonic() - started
    assert job["status"] == "COMPLETED", job.get("error")
    trials = api.get(f"/api/v1/training/{job_id}/trials").json()
    assert 2 <= len(trials) < 10000
    assert elapsed < 15 + 60  # the budget plus load, final fit and registration


def test_progress_and_eta_are_reported_while_tuning(api, demo_request):
    job_id = unique("eta")
    body = tuned(demo_request, job_id, optimization_trials=10000, optimization_timeout="25s")
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    seen = wait_for(
        api,
        job_id,
        until=lambda j: (
            j["current_stage"] == "tuning"
            and j["progress_percentage"] > 25
            or j["status"] in ("COMPLETED", "FAILED")
        ),
        timeout=120,
    )
    assert seen["status"] == "RUNNING" and 25 < seen["progress_percentage"] < 75
    assert seen["estimated_completion"] is not None
    assert wait_for(api, job_id, timeout=180)["status"] == "COMPLETED"


def test_a_failing_trial_is_recorded_and_does_not_fail_the_job(api, demo_request):
    job_id = unique("isolate")
    # The portfolio's num_leaves 31, 128, 15, clipped into the choices [1, 31], give 31, 1, 1.
    body = tuned(
        demo_request,
        job_id,
        optimization_trials=3,
        search_space={"num_leaves": {"type": "categorical", "choices": [1, 31]}},
    )
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, job_id, timeout=180)
    assert job["status"] == "COMPLETED", job.get("error")
    trials = sorted(api.get(f"/api/v1/training/{job_id}/trials").json(), key=lambda t: t["trial_number"])
    assert [t["state"] for t in trials] == ["COMPLETE", "FAILED", "FAILED"]
    assert trials[1]["performance_score"] is None


def test_too_many_failed_trials_fail_the_job_with_the_reason(api, settings, demo_request):
    job_id = unique("allfail")
    body = tuned(
        demo_request,
        job_id,
        optimization_trials=8,
        search_space={"min_child_samples": {"type": "categorical", "choices": [-1, -2, -3, -4, -5]}},
    )
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, job_id, timeout=180)
    assert job["status"] == "FAILED"
    assert "trials failed" in job["error"] and "min_data_in_leaf" in job["error"]
    # The MLflow UI shows the job failed (not running forever), each failed trial nested under it.
    # (a trial the stop cancelled in the other slot shows as KILLED)
    parent, nested = mlflow_runs(settings, job_id)
    assert parent.info.status == "FAILED"
    trials = api.get(f"/api/v1/training/{job_id}/trials").json()
    expected = {
        f"lightgbm/trial-{t['trial_number']}": "FAILED" if t["state"] == "FAILED" else "KILLED"
        for t in trials
    }
    assert {r.data.tags["pmls.trial"]: r.info.status for r in nested} == expected
    assert list(expected.values()).count("FAILED") >= 4


def test_cancel_stops_a_running_search_and_keeps_finished_trials(api, settings, demo_request):
    job_id = unique("cancel_search")
    body = tuned(demo_request, job_id, optimization_trials=10000, optimization_timeout="10m")
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    wait_for(
        api,
        job_id,
        until=lambda j: len(api.get(f"/api/v1/training/{job_id}/trials").json()) >= 3,
        timeout=120,
    )
    started = time.monotonic()
    assert api.post(f"/api/v1/training/{job_id}/cancel").json()["cancelled"] is True
    job = wait_for(api, job_id, timeout=60)
    assert job["status"] == "CANCELLED"
    assert time.monotonic() - started < 30
    trials = api.get(f"/api/v1/training/{job_id}/trials").json()
    assert len([t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]) >= 3

    async def child_status(client):
        return (await client.get_workflow_handle(f"{job_id}/lightgbm").describe()).status.name

    assert temporal(settings, child_status) == "CANCELED"
    parent, nested = mlflow_runs(settings, job_id)
    assert parent.info.status == "KILLED"
    assert len(nested) == len(trials)


def test_unknown_method_or_parameter_is_422(api, demo_request):
    bad_method = tuned(demo_request, unique("m"), optimization_method="bayes-magic")
    assert api.post("/api/v1/training/start", json=bad_method).status_code == 422
    bad_param = tuned(
        demo_request, unique("p"), search_space={"num_trees": {"type": "int", "low": 1, "high": 9}}
    )
    resp = api.post("/api/v1/training/start", json=bad_param)
    assert resp.status_code == 422 and "num_trees" in resp.json()["message"]


def test_the_same_random_seed_repeats_the_search(api, demo_request):
    """Two jobs with one random_seed evaluate the same configurations, to the same scores, in the same order."""
    runs = []
    for _ in range(2):
        job_id = unique("seeded")
        body = {
            **tuned(demo_request, job_id, optimization_trials=7, max_parallel_trials=1, portfolio=False),
            "random_seed": 1234,
        }
        assert api.post("/api/v1/training/start", json=body).status_code == 202
        job = wait_for(api, job_id, timeout=300)
        assert job["status"] == "COMPLETED", job.get("error")
        trials = sorted(api.get(f"/api/v1/training/{job_id}/trials").json(), key=lambda t: t["trial_number"])
        runs.append([(t["hyperparameters"], t["performance_score"]) for t in trials])
    assert len(runs[0]) == 7
    assert runs[0] == runs[1]


def test_a_budget_shorter_than_one_trial_fails_with_what_to_do(api, demo_request):
    job_id = unique("toolong")
    body = demo_request(
        job_id,
        model_type="RANDOM_FOREST",
        hyperparameter_config={
            "optimization_method": "random",
            "optimization_trials": 5,
            "optimization_timeout": "2s",
            "portfolio": False,
            "search_space": {"n_estimators": {"type": "int", "low": 3000, "high": 3000}},
        },
    )
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, job_id, timeout=180)
    assert job["status"] == "FAILED"
    assert "optimization_timeout" in job["error"] and "still running when the budget ran out" in job["error"]


def test_a_long_search_continues_as_new_and_loses_or_repeats_no_trial(api, settings, demo_request):
    """A search continues as new every `trials_per_run` finished trials (250 by default; 3 here, through the
    workflow's memo, as someone starting the job with `temporal workflow start --memo` could): the study
    carries on across the runs with exactly the requested trials, each recorded once."""
    from pmls.contracts import TrainingRequest
    from pmls.contracts.ids import request_hash
    from pmls.contracts.workflow import TrainingWorkflowInput
    from pmls.storage.postgres import JobStore, create_pool

    job_id = unique("chain")
    request = TrainingRequest.model_validate(
        tuned(demo_request, job_id, optimization_trials=9, max_parallel_trials=2)
    )

    async def start(client):
        # What POST /training/start does (the job row, then the workflow), with a small trials-per-run memo.
        pool = await create_pool(settings.database.url)
        try:
            await JobStore(pool).create(job_id=job_id, request=request, request_hash=request_hash(request))
        finally:
            await pool.close()
        await client.start_workflow(
            TrainingWorkflow.run,
            TrainingWorkflowInput(job_id=job_id, request=request),
            id=job_id,
            task_queue=settings.temporal.task_queue,
            memo={
                MEMO_TRIALS_QUEUE: settings.temporal.trials_task_queue,
                MEMO_TRIAL_SLOTS: 2,
                MEMO_TRIALS_PER_RUN: 3,
            },
        )

    temporal(settings, start)
    job = wait_for(api, job_id, timeout=300)
    assert job["status"] == "COMPLETED", job.get("error")
    trials = api.get(f"/api/v1/training/{job_id}/trials").json()
    assert sorted(t["trial_number"] for t in trials) == list(range(9))

    async def runs(client):
        # Each run of the chain, as `temporal workflow list` shows them (visibility may lag a moment).
        for _ in range(20):
            found = [w.run_id async for w in client.list_workflows(f"WorkflowId = '{job_id}/lightgbm'")]
            if len(found) >= 2:
                break
            await asyncio.sleep(0.5)
        return found

    assert len(temporal(settings, runs)) >= 2  # a run finishes at most 3 + 3 trials with 2 slots
    _, nested = mlflow_runs(settings, job_id)
    assert sorted(r.data.tags["pmls.trial"] for r in nested) == sorted(
        f"lightgbm/trial-{n}" for n in range(9)
    )

"""Record the histories the replay tests use, against a running stack (`pmls up`):

    python -m tests.workflows.record DATA.parquet [NAME ...]

It submits a plain job, a tuned job, an ENSEMBLE job, a job whose source is missing, a tuned job it cancels
through the API, one it cancels by signal and one that deploys its model (then a repeated deploy and a rollback
of lineage ``churn``), and saves each workflow's history (the LightGBM tuning child's and the lineage workflow's
too) under tests/workflows/histories/. NAMEs (e.g. ``completed-deployed``) record only those.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx

from pmls.auth import api_headers
from pmls.contracts.temporal import CANCEL_SIGNAL
from pmls.ml.demo_data import DEMO_PERIODS
from pmls.settings import Settings
from pmls.temporal import connect_temporal

OUT = Path(__file__).parent / "histories"


def request(job_id: str, data: str, model_type: str = "LIGHTGBM", **hp) -> dict:
    return {
        "training_id": job_id,
        "model_type": model_type,
        "model_name": "churn",
        "dataset_config": {
            "source": data,
            "target": "churned",
            "timestamp_column": "event_time",
            "entity_column": "customer_id",
            **DEMO_PERIODS,
        },
        "hyperparameter_config": {"optimization_method": "none", **hp},
    }


def run(api: httpx.Client, body: dict, cancel_after: float | None = None, by_signal: bool = False) -> None:
    job_id = body["training_id"]
    api.post("/api/v1/training/start", json=body).raise_for_status()
    started = time.monotonic()
    while True:
        job = api.get(f"/api/v1/training/{job_id}/status").json()
        if job["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return
        if cancel_after is not None and time.monotonic() - started > cancel_after:
            if by_signal:
                asyncio.run(signal_cancel(job_id))
            else:
                api.post(f"/api/v1/training/{job_id}/cancel")
            cancel_after = None
        time.sleep(0.5)


async def signal_cancel(workflow_id: str) -> None:
    client = await connect_temporal(Settings())
    await client.get_workflow_handle(workflow_id).signal(CANCEL_SIGNAL, "recorded cancel by signal")


async def save(workflow_id: str, name: str) -> None:
    client = await connect_temporal(Settings())
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(history.to_json())
    print(f"saved {name}")


def main(data: str, only: list[str]) -> None:
    stamp = time.strftime("%H%M%S")
    jobs = {
        "completed-plain": (request(f"rec_plain_{stamp}", data), None),
        "completed-tuned": (
            request(f"rec_tuned_{stamp}", data, optimization_method="tpe", optimization_trials=12),
            None,
        ),
        # Several families: the budget follows the leaders (stop and widen signals to the children).
        "completed-ensemble": (
            request(
                f"rec_ensemble_{stamp}",
                data,
                "ENSEMBLE",
                optimization_method="tpe",
                optimization_trials=1000,
                optimization_timeout="45s",
            ),
            None,
        ),
        "failed-missing-source": (request(f"rec_failed_{stamp}", "nonexistent.parquet"), None),
        "cancelled-during-tuning": (
            request(f"rec_cancel_{stamp}", data, optimization_method="tpe", optimization_trials=1000),
            20.0,
        ),
        "cancelled-by-signal": (request(f"rec_signal_{stamp}", data, optimization_method="tpe"), 15.0),
        # The deploy stage; then the lineage workflow's history (promote, and a rollback below).
        "completed-deployed": (
            {**request(f"rec_deploy_{stamp}", data), "deployment_config": {"auto_deploy": True}},
            None,
        ),
    }
    if only:
        jobs = {name: job for name, job in jobs.items() if name in only}
    settings = Settings()
    with httpx.Client(base_url=settings.api.base_url, timeout=60, headers=api_headers(settings)) as api:
        for name, (body, cancel_after) in jobs.items():
            run(api, body, cancel_after, by_signal="signal" in name)
            asyncio.run(save(body["training_id"], name))
            if "tuned" in name or "tuning" in name or "ensemble" in name:
                asyncio.run(save(f"{body['training_id']}/lightgbm", f"{name}-child"))
            if name == "completed-deployed":
                # A forced promotion of the same version (UNCHANGED) and a rollback attempt, then the history.
                job = api.get(f"/api/v1/training/{body['training_id']}/status").json()
                api.post(f"/api/v1/models/deploy/{job['model_id']}", json={"force": True})
                api.post("/api/v1/models/churn/rollback", json={})
                asyncio.run(save("lineage/churn", "lineage-churn"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

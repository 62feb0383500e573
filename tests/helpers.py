"""Polling and client helpers shared by the tests (no sleeps-as-assertions)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx

from pmls.settings import Settings

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def error_fields(resp: httpx.Response) -> list[str]:
    """The request fields a 4xx answer names (the API's error shape: ``detail`` items with a ``field``)."""
    return [d["field"] for d in resp.json()["detail"]]


def unique(prefix: str) -> str:
    return f"{prefix}_{time.strftime('%H%M%S')}_{os.urandom(3).hex()}"


def wait_for(
    api: httpx.Client, job_id: str, *, until: Callable[[dict], bool] | None = None, timeout: float = 180.0
) -> dict:
    """Poll the status endpoint until ``until(job)`` (default: a terminal status)."""
    until = until or (lambda job: job["status"] in TERMINAL)
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        resp = api.get(f"/api/v1/training/{job_id}/status")
        assert resp.status_code == 200, resp.text
        job = resp.json()
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not get there in {timeout:.0f} s; last seen: {job}")


def temporal(settings: Settings, coro_fn: Callable) -> object:
    """Run one coroutine against a fresh Temporal client (tests are sync; the SDK is async)."""
    from pmls.temporal import connect_temporal

    async def main():
        return await coro_fn(await connect_temporal(settings))

    return asyncio.run(main())


def mlflow_runs(settings: Settings, job_id: str) -> tuple[object, list]:
    """The job's MLflow run and the trial runs nested under it."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    client = mlflow.MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    parent = client.search_runs(ids, filter_string=f"tags.`pmls.job_id` = '{job_id}'")[0]
    nested = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return parent, nested


@contextlib.contextmanager
def extra_process(stack, argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Another pmls process on the test stack (``pmls.cli`` arguments), configured by ``env``; stopped after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmls.cli", *argv],
        env=stack.child_env() | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def extra_api(stack, headers, env: dict[str, str]) -> Iterator[httpx.Client]:
    """A second API process with its own settings (``env``), ready to answer."""
    from pmls.stack import free_port

    port = free_port()
    with extra_process(stack, ["api"], env | {"PMLS_API_PORT": str(port)}):
        base = f"http://{stack.settings.api.api_host}:{port}"
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the second API did not start"
                time.sleep(0.3)
            yield client

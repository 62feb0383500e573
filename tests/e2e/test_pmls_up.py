"""`pmls up` as a user runs it: prints its URLs, stops everything on SIGTERM, and a second `pmls up`
on the same PMLS_HOME finds the earlier jobs and models again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from pmls.auth import read_local_token
from pmls.settings import PORT_VARS
from pmls.stack import free_port
from tests.helpers import unique, wait_for

pytestmark = pytest.mark.slow


def _env(home: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMLS_")}
    env.update({name: str(free_port()) for name in PORT_VARS}, PMLS_HOME=str(home), PMLS_DATA_ROOTS=str(data))
    return env


def _children_of(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            if str(home) in " ".join(proc.info["cmdline"] or []) or (proc.info["environ"] or {}).get(
                "PMLS_HOME"
            ) == str(home):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


class Up:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pmls.cli", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{env['PMLS_API_PORT']}", timeout=60)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                if self.api.get("/readyz").status_code == 200:
                    # The local admin token `pmls up` wrote on its first start (the same on the second).
                    token = read_local_token(Path(env["PMLS_HOME"]))
                    self.api.headers["Authorization"] = f"Bearer {token}"
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("pmls up did not become ready")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=120)
        self.api.close()
        return out


def test_up_stops_cleanly_and_a_second_up_finds_earlier_work(demo_request, demo_data):
    from tests.conftest import stack_home

    tmp_path = stack_home()
    env = _env(tmp_path / "home", demo_data.parent)
    first = Up(env)
    job_id = unique("persist")
    assert first.api.post("/api/v1/training/start", json=demo_request(job_id)).status_code == 202
    job = wait_for(first.api, job_id, timeout=180)
    assert job["status"] == "COMPLETED"
    out = first.stop()
    assert "Temporal UI" in out and "MLflow UI" in out and "API docs" in out
    assert first.proc.returncode == 0
    time.sleep(1)
    assert _children_of(tmp_path / "home") == []  # no orphan server or worker

    second = Up(env)
    try:
        again = second.api.get(f"/api/v1/training/{job_id}/status")
        assert again.status_code == 200 and again.json()["status"] == "COMPLETED"
        assert second.api.get(f"/api/v1/models/artifacts/{job['model_id']}").status_code == 200
        assert job_id in [j["job_id"] for j in second.api.get("/api/v1/training/jobs").json()]
    finally:
        second.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)

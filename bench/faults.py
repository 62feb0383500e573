"""Durability at scale (issue #13): the fault-injection scenarios of ``tests/e2e/test_faults.py`` on many jobs.

On a fresh embedded stack (temporary ``PMLS_HOME``, free ports), two phases of ``--jobs`` tuned LightGBM jobs each,
all submitted at once:

* **quiet**: no fault, the reference;
* **faults**: while the jobs run, a random worker process (a trials worker, or the training worker that runs the
  workflows) is SIGKILLed every ``--kill-every`` seconds, and PostgreSQL is stopped once for ``--outage`` seconds
  a third of the way in. Every activity attempt on the trials workers also fails at random with probability
  ``--fail-rate`` (``PMLS_FAULT_INJECTION_RATE``; the quiet phase runs on the same workers with it at 0 — they are
  restarted between phases).

Printed: the success rate beside the seed's 95 % target, the stretch of the phase's wall clock and of the jobs'
median duration, and lost or duplicated work read from the sources of truth — finished trials per Optuna study
against the trials asked for, configurations evaluated twice, models registered more than once for a job.

``python -m bench.faults --jobs 100 --kill-every 20``
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pmls.settings import PORT_VARS, Settings

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Phase:
    name: str
    jobs: dict[str, dict] = field(default_factory=dict)  # job id -> last status
    wall: float = 0.0
    injected: Counter = field(default_factory=Counter)
    audit: dict[str, int] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return sum(j["status"] == "COMPLETED" for j in self.jobs.values())

    def durations(self) -> list[float]:
        from datetime import datetime

        out = []
        for job in self.jobs.values():
            if job.get("completed_at") and job.get("created_at"):
                end = datetime.fromisoformat(job["completed_at"])
                out.append((end - datetime.fromisoformat(job["created_at"])).total_seconds())
        return out


def body(job_id: str, data: Path, trials: int) -> dict:
    from pmls.ml.demo_data import DEMO_PERIODS

    return {
        "training_id": job_id,
        "model_type": "LIGHTGBM",
        "model_name": "churn_faults",
        "dataset_config": {
            "source": str(data),
            "target": "churned",
            "timestamp_column": "event_time",
            "entity_column": "customer_id",
            **DEMO_PERIODS,
        },
        "hyperparameter_config": {"optimization_method": "tpe", "optimization_trials": trials},
    }


def run_phase(stack, api: httpx.Client, phase: Phase, args, data: Path, faults: bool) -> None:
    ids = [f"{phase.name}_{i:03d}_{random.randrange(16**6):06x}" for i in range(args.jobs)]
    started = time.monotonic()
    for job_id in ids:
        api.post("/api/v1/training/start", json=body(job_id, data, args.trials)).raise_for_status()
    stop = threading.Event()
    killer = threading.Thread(target=inject, args=(stack, phase, args, stop), daemon=True) if faults else None
    if killer:
        killer.start()
    pending = set(ids)
    reported = time.monotonic()
    while pending:
        if time.monotonic() - reported > 30:
            reported = time.monotonic()
            states = Counter(j.get("status") for j in phase.jobs.values())
            log(f"{phase.name}: {dict(states)}")
        for job_id in list(pending):
            try:
                job = api.get(f"/api/v1/training/{job_id}/status").json()
            except httpx.HTTPError:
                continue  # the API answers again in a moment
            phase.jobs[job_id] = job
            if job.get("status") in TERMINAL:
                pending.discard(job_id)
        if time.monotonic() - started > args.timeout:
            log(
                f"{phase.name}: {len(pending)} jobs still open after {args.timeout} s; counted as not completed"
            )
            break
        time.sleep(2)
    phase.wall = time.monotonic() - started
    stop.set()
    if killer:
        killer.join()


def inject(stack, phase: Phase, args, stop: threading.Event) -> None:
    started = time.monotonic()
    outage_done = args.outage <= 0
    while not stop.wait(args.kill_every):
        workers = [p for p in stack.parts if p.name.startswith("worker-") and p.alive()]
        if workers:
            victim = random.choice(workers)
            os.kill(victim.proc.pid, signal.SIGKILL)
            phase.injected[f"SIGKILL {victim.name}"] += 1
            log(f"SIGKILL {victim.name}")
        if not outage_done and time.monotonic() - started > args.expected / 3 and not stop.is_set():
            outage_done = True
            log(f"PostgreSQL stopped for {args.outage:.0f} s")
            stack.pause("postgres")
            phase.injected[f"PostgreSQL stopped {args.outage:.0f} s"] += 1
            time.sleep(args.outage)  # the whole outage, even if the jobs finish meanwhile
            stack.resume("postgres")
            log("PostgreSQL back")


def audit(settings: Settings, phase: Phase, trials: int) -> dict[str, int]:
    """Lost and duplicated work, from the Optuna studies and the model registry."""
    import mlflow
    import optuna

    lost = twice = short = 0
    for job_id, job in phase.jobs.items():
        if job.get("status") != "COMPLETED":
            continue
        study = optuna.load_study(study_name=f"{job_id}/lightgbm", storage=settings.database.optuna_url)
        finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        configurations = Counter(tuple(sorted(t.params.items())) for t in finished)
        twice += sum(n - 1 for n in configurations.values() if n > 1)
        short += max(trials - len(finished), 0)
        lost += len(finished) > trials
    client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    versions = Counter(
        v.tags.get("pmls.job_id")
        for v in client.search_model_versions("name = 'churn_faults'", max_results=10_000)
    )
    registered_twice = sum(n - 1 for job, n in versions.items() if n > 1 and job in phase.jobs)
    return {
        "trials missing": short,
        "studies with extra trials": lost,
        "configurations evaluated twice": twice,
        "models registered twice": registered_twice,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100, help="jobs per phase (default 100)")
    parser.add_argument("--trials", type=int, default=6, help="TPE trials per job (default 6)")
    parser.add_argument(
        "--kill-every", type=float, default=20.0, help="seconds between worker kills (default 20)"
    )
    parser.add_argument("--outage", type=float, default=60.0, help="PostgreSQL outage in seconds (0: none)")
    parser.add_argument("--fail-rate", type=float, default=0.05, help="activity attempts failed on purpose")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="give up on a phase after this many seconds"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary PMLS_HOME")
    args = parser.parse_args(argv)

    from pmls.auth import api_headers
    from pmls.ml.demo_data import generate_demo_dataset
    from pmls.stack import Stack, free_port

    home = Path(tempfile.mkdtemp(prefix="pmls-faults-"))
    os.environ["PMLS_HOME"] = str(home)
    for var in PORT_VARS:
        os.environ[var] = str(free_port())
    os.environ["PMLS_MAX_ACTIVE_JOBS_PER_CALLER"] = str(args.jobs + 1)  # all jobs are submitted at once
    data = generate_demo_dataset(home / "data" / "small.parquet", days=540, rows_per_day=3)
    phases = []
    try:
        for name, faults in (("quiet", False), ("faults", True)):
            os.environ["PMLS_FAULT_INJECTION_RATE"] = str(args.fail_rate if faults else 0.0)
            stack = Stack(Settings()).start()
            try:
                settings = stack.settings
                with httpx.Client(
                    base_url=settings.api.base_url, headers=api_headers(settings), timeout=60
                ) as api:
                    phase = Phase(name)
                    args.expected = phases[0].wall if phases else args.jobs * 5.0
                    log(f"{name}: {args.jobs} jobs of {args.trials} trials")
                    run_phase(stack, api, phase, args, data, faults)
                    phase.audit = audit(settings, phase, args.trials)
                    phases.append(phase)
                    log(f"{name}: {phase.completed}/{args.jobs} COMPLETED in {phase.wall:.0f} s")
            finally:
                stack.stop()
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    report(phases, args)


def report(phases: list[Phase], args) -> None:
    quiet, faults = phases
    q_med, f_med = statistics.median(quiet.durations() or [0]), statistics.median(faults.durations() or [0])
    injected = dict(faults.injected)
    print()
    print(f"| phase | jobs | completed | success | wall (s) | median job (s) | {' | '.join(faults.audit)} |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(faults.audit))
    for phase in phases:
        med = statistics.median(phase.durations() or [0])
        print(
            f"| {phase.name} | {len(phase.jobs)} | {phase.completed} | {phase.completed / max(len(phase.jobs), 1):.0%} "
            f"| {phase.wall:.0f} | {med:.0f} | " + " | ".join(str(v) for v in phase.audit.values()) + " |"
        )
    print()
    print(
        f"injected in the faults phase: {dict(injected)}; activity attempts failed on purpose: {args.fail_rate:.0%}"
    )
    print(
        f"success {faults.completed / max(len(faults.jobs), 1):.1%} (target 95 %); stretch: wall "
        f"{faults.wall / max(quiet.wall, 1e-9):.2f}x, median job {f_med / max(q_med, 1e-9):.2f}x"
    )
    failed = [(j, s.get("error")) for j, s in faults.jobs.items() if s.get("status") != "COMPLETED"]
    for job_id, error in failed[:10]:
        print(f"  not completed: {job_id}: {error}")


if __name__ == "__main__":
    main()

"""``pmls worker --queue NAME``: the worker for one task queue.

``pmls-training`` runs the workflows and the light I/O activities (and the outbox relay);
``pmls-trials`` runs the CPU-heavy activities in a thread pool of ``--slots`` threads; ``pmls up`` starts one
such process per trial slot by default, so that concurrent trials never share an interpreter lock. They are
separate processes so that training never starves the workflow event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.supervision import Supervisor
from pmls.contracts.activities import ON_TRAINING_QUEUE, ON_TRIALS_QUEUE, activities_of
from pmls.settings import Settings
from pmls.temporal import connect_temporal

log = logging.getLogger("pmls.worker")


async def _relay_forever(outbox, cache, interval: float) -> None:
    from pmls.storage.events import relay_outbox

    while True:
        try:
            await relay_outbox(outbox, cache)
        except Exception as exc:  # noqa: BLE001 - the relay must outlive a database blip
            log.warning("outbox relay: %s", exc)
        await asyncio.sleep(interval)


async def _reconcile_forever(client: Client, jobs, cache, interval: float) -> None:
    from pmls.temporal import reconcile_closed_jobs, reconcile_unstarted, sync_queue

    while True:
        for step in (reconcile_closed_jobs, reconcile_unstarted):
            try:
                await step(client, jobs, cache)
            except Exception as exc:  # noqa: BLE001 - like the relay, it must outlive a Temporal or database blip
                log.warning("job reconciler (%s): %s", step.__name__, exc)
        try:
            await sync_queue(jobs, cache)
        except Exception as exc:  # noqa: BLE001
            log.warning("training queue: %s", exc)
        await asyncio.sleep(interval)


async def _when_reachable(what: str, make: Callable[[], Any], budget: float) -> Any:
    """A client of a server that may be down right now (a worker restarted during an outage): the outage is
    waited out as an activity waits it out, for at most the outage budget."""
    from activities.supervision import classify
    from pmls.contracts.activities import FailureKind

    started, delay = time.monotonic(), 1.0
    while True:
        try:
            made = make()
            return await made if inspect.isawaitable(made) else made
        except Exception as exc:
            if classify(exc) is not FailureKind.UNAVAILABLE or time.monotonic() - started > budget:
                raise
            log.warning("%s unreachable (%s); trying again in %.0f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def run_training_worker(settings: Settings, client: Client, stop: asyncio.Event) -> None:
    from activities.deployment import DeploymentActivities
    from activities.jobs import JobActivities
    from activities.tuning import StudyActivities
    from pmls.storage.cache import Cache
    from pmls.storage.postgres import JobStore, Outbox, create_pool
    from pmls.storage.registry import ModelRegistry
    from pmls.storage.studies import StudyStore
    from workflows.lineage import LineageWorkflow
    from workflows.training import TrainingWorkflow
    from workflows.tuning import TuningWorkflow

    budget = settings.worker.outage_budget_seconds
    pool = await _when_reachable("PostgreSQL", lambda: create_pool(settings.database.url), budget)
    cache = Cache(settings.redis.url, timeout=settings.redis.redis_socket_timeout)
    registry = ModelRegistry(settings.mlflow.tracking_uri)
    jobs = JobActivities(pool, cache, registry, client)
    rows = _trial_rows(settings)
    store = await _when_reachable("PostgreSQL", lambda: StudyStore(settings.database.optuna_url), budget)
    studies = StudyActivities(store, rows, registry)
    deployments = DeploymentActivities(pool, cache, registry, client, settings)
    relay = asyncio.create_task(_relay_forever(Outbox(pool), cache, settings.worker.relay_interval_seconds))
    reconciler = asyncio.create_task(
        _reconcile_forever(client, JobStore(pool), cache, settings.worker.reconcile_interval_seconds)
    )
    worker = Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=[TrainingWorkflow, TuningWorkflow, LineageWorkflow],
        activities=activities_of(ON_TRAINING_QUEUE, jobs, studies, deployments),
        interceptors=[
            Supervisor(settings.worker.outage_budget_seconds, settings.worker.fault_injection_rate)
        ],
    )
    try:
        await _run_until(worker, stop)
    finally:
        relay.cancel()
        reconciler.cancel()
        rows.close()
        await cache.close()
        await pool.close()


async def run_trials_worker(
    settings: Settings,
    client: Client,
    stop: asyncio.Event,
    *,
    slots: int | None = None,
    threads: int | None = None,
) -> None:
    from activities.champion import ChampionActivities
    from activities.data import DataActivities
    from activities.training import TrainingActivities
    from activities.tuning import TrialActivities
    from activities.workspace import Workspace
    from pmls.ml.sources import FileAccess
    from pmls.storage.digests import RecordedDigests
    from pmls.storage.registry import ModelRegistry
    from pmls.storage.sources import Connections, warn_superusers
    from pmls.storage.studies import StudyStore

    slots = slots or settings.worker.trial_slots
    threads = threads or settings.worker.threads_per_trial
    log.info(
        "trials worker: %d slot%s of %d thread%s", slots, "s" * (slots > 1), threads, "s" * (threads > 1)
    )
    _limit_torch_threads(threads)
    ws = Workspace(settings.artifacts, threads_per_trial=threads)
    connections = Connections(settings.connections, settings.source_statement_timeout_seconds)
    # In the background: an unreachable database must not hold up the worker.
    threading.Thread(
        target=warn_superusers, args=(connections,), name="connection-check", daemon=True
    ).start()
    rows = _trial_rows(settings)
    store = await _when_reachable(
        "PostgreSQL", lambda: StudyStore(settings.database.optuna_url), settings.worker.outage_budget_seconds
    )
    trials = TrialActivities(ws, store, rows)
    digests = RecordedDigests(settings.database.url)
    champion = ChampionActivities(ModelRegistry(settings.mlflow.tracking_uri), ws, digests)
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="trial") as executor:
        worker = Worker(
            client,
            task_queue=settings.temporal.trials_task_queue,
            activities=activities_of(
                ON_TRIALS_QUEUE,
                DataActivities(ws, FileAccess(tuple(settings.data_root_paths)), connections),
                TrainingActivities(ws),
                trials,
                champion,
            ),
            activity_executor=executor,
            max_concurrent_activities=slots,
            interceptors=[
                Supervisor(settings.worker.outage_budget_seconds, settings.worker.fault_injection_rate)
            ],
            # Heartbeats carry cancellation back: send them often enough that a cancel lands in ~1 s.
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            default_heartbeat_throttle_interval=timedelta(seconds=1),
        )
        try:
            await _run_until(worker, stop)
        finally:
            rows.close()
            digests.close()


def _trial_rows(settings: Settings):
    from pmls.storage.trial_rows import TrialRows

    return TrialRows(
        settings.database.url, settings.redis.url, redis_timeout=settings.redis.redis_socket_timeout
    )


def _limit_torch_threads(threads: int) -> None:
    # torch's thread pool is process-wide: size it once so concurrent trials do not oversubscribe the cores.
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


async def _run_until(worker: Worker, stop: asyncio.Event) -> None:
    async with worker:
        log.info("worker on %s started", worker.task_queue)
        await stop.wait()
        log.info("worker on %s stopping", worker.task_queue)


def warm_up() -> None:
    """Import what the first job would otherwise wait for (the model zoo, torch, skops: ~4 s on 2 cores).

    Runs before the worker polls, so the first trial of the first job is as fast as the hundredth.
    """
    started = time.monotonic()
    try:
        import pmls.ml.bundle  # noqa: F401 - skops and the serving code
        import pmls.ml.final  # noqa: F401
        from pmls.ml.zoo import registry

        registry()
    except Exception as exc:  # noqa: BLE001 - the job reports a broken import with its own context
        log.warning("warm-up import failed: %s", exc)
    log.info("warm-up imports done in %.1f s", time.monotonic() - started)


async def run_worker(
    queue: str, settings: Settings | None = None, *, slots: int | None = None, threads: int | None = None
) -> None:
    settings = settings or Settings()
    runners = {
        settings.temporal.task_queue: run_training_worker,
        settings.temporal.trials_task_queue: functools.partial(
            run_trials_worker, slots=slots, threads=threads
        ),
    }
    if queue not in runners:
        raise SystemExit(f"unknown queue {queue!r}; choose one of: {', '.join(runners)}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    # Warm before polling: a worker that takes a task is ready to run it at full speed.
    await asyncio.to_thread(warm_up)
    client = await connect_temporal(settings)
    await runners[queue](settings, client, stop)

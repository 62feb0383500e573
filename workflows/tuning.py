"""TuningWorkflow: one Optuna study for one model family, trials fanned out over the trials queue.

Workflow id ``{job_id}/{family}``; each trial is an activity with the deterministic id ``trial-{n}``
(a child workflow per trial costs ~300 ms, a fifth of a 1.5 s trial; see PITFALLS.md). The next trials
are asked while others run, so the slots never wait for the sampler. Results are recorded in batches.
The history stays bounded by continuing as new; the study itself (PostgreSQL) is the source of truth.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pmls.contracts.tuning import (
        AskInput,
        RecordTrialsInput,
        TrialInput,
        TrialResult,
        TrialSpec,
        TuningInput,
        TuningProgress,
        TuningResult,
        TuningState,
    )

IO_RETRY = RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=10))
# A crashed trial worker is noticed by the heartbeat timeout and the trial re-runs elsewhere, twice at most.
# Bad parameters come back as a FAILED result, not an error: what raises is infrastructure (a dead worker,
# the database restarting), so give it a few attempts spread over half a minute.
TRIAL_RETRY = RetryPolicy(maximum_attempts=6, initial_interval=timedelta(seconds=2), backoff_coefficient=2,
                          maximum_interval=timedelta(seconds=15), non_retryable_error_types=["DataError"])
RECORD_EVERY = 10
RECORD_SECONDS = 5.0
PROGRESS_SECONDS = 2.0
TRIALS_PER_RUN = 250


@workflow.defn(name="TuningWorkflow")
class TuningWorkflow:
    def __init__(self) -> None:
        self._running: dict[int, asyncio.Task] = {}
        self._specs: dict[int, TrialSpec] = {}
        self._queue: list[TrialSpec] = []
        self._unrecorded: list[TrialResult] = []
        self._last_record = None
        self._last_progress = None
        self._recorder: asyncio.Task | None = None
        self._signals: list[asyncio.Task] = []

    @workflow.run
    async def run(self, inp: TuningInput) -> TuningResult:
        self.inp, self.state = inp, inp.state or TuningState()
        self._last_record = self._last_progress = workflow.now()
        started_this_run, stopped_by = 0, "trials"
        try:
            while True:
                stopped_by = self._stop_reason()
                if stopped_by or started_this_run >= TRIALS_PER_RUN or self._suggest_continue():
                    break
                started_this_run += await self._fill_slots(started_this_run)
                if not self._running:
                    stopped_by = "exhausted"
                    break
                # Bookkeeping runs beside the trials, never between one trial and the next.
                self._record()
                self._report_progress()
                await self._wait_for_a_trial()
        finally:
            # On a budget stop, a cancel or an error alike: stop what runs, keep what finished.
            await self._stop_running()
            await self._tell_unrun()
            await self._flush_records()
        if not stopped_by and (started_this_run >= TRIALS_PER_RUN or self._suggest_continue()):
            workflow.continue_as_new(inp.model_copy(update={"state": self.state}))
        return self._result(stopped_by or "trials")

    # -- the loop --------------------------------------------------------------------------------
    def _stop_reason(self) -> str:
        s, hp = self.state, self.inp.hyperparameter_config
        if s.finished >= self.inp.study.limit:
            return "trials"
        if workflow.now() >= self.inp.deadline:
            return "timeout"
        if s.failed >= 4 and s.failed > hp.max_failed_trial_share * max(s.finished, 1):
            return "failures"
        return ""

    def _suggest_continue(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()

    async def _fill_slots(self, started_this_run: int) -> int:
        launched = 0
        while len(self._running) < self.inp.parallel and self.state.started < self.inp.study.limit:
            if not self._queue and not await self._ask():
                break
            spec = self._queue.pop(0)
            self._specs[spec.number] = spec
            self._running[spec.number] = asyncio.create_task(self._trial(spec))
            self.state.started += 1
            launched += 1
        if (self._running and not self._queue and self.state.started < self.inp.study.limit
                and started_this_run + launched + 1 < TRIALS_PER_RUN):
            await self._ask()  # prefetch: the next trial's parameters are ready when a slot frees
        return launched

    async def _ask(self) -> bool:
        free = max(1, self.inp.parallel - len(self._running))
        want = min(free, self.inp.study.limit - self.state.started - len(self._queue))
        if want <= 0:
            return False
        self.state.asks += 1
        specs = await self._io("ask_trials", AskInput(study=self.inp.study, n=want, key=f"ask-{self.state.asks}"),
                               result_type=list[TrialSpec])
        self._queue.extend(specs)
        return bool(specs)

    async def _trial(self, spec: TrialSpec) -> TrialResult:
        inp = self.inp
        try:
            return await workflow.execute_activity(
                "run_trial",
                TrialInput(job_id=inp.job_id, study=inp.study, trial=spec, prepared=inp.prepared,
                           dataset_config=inp.dataset_config, seed=inp.seed + spec.number),
                result_type=TrialResult, activity_id=f"trial-{spec.number}", task_queue=_trials_queue(),
                start_to_close_timeout=timedelta(hours=4), heartbeat_timeout=timedelta(seconds=20),
                retry_policy=TRIAL_RETRY, cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as exc:
            reason = getattr(exc.cause, "message", None) or str(exc)
            state = "CANCELLED" if _is_cancel(exc) else "FAILED"
            return TrialResult(number=spec.number, trial_id=spec.trial_id, state=state, params=spec.params,
                               error=reason)

    async def _wait_for_a_trial(self) -> None:
        remaining = (self.inp.deadline - workflow.now()).total_seconds()
        try:
            await workflow.wait_condition(lambda: any(t.done() for t in self._running.values()),
                                          timeout=max(remaining, 0.001))
        except TimeoutError:
            return
        for number in [n for n, t in self._running.items() if t.done()]:
            self._count(self._running.pop(number).result())

    def _count(self, result: TrialResult) -> None:
        s = self.state
        if result.state == "COMPLETE":
            s.completed += 1
            if s.best is None or _better(result.score, s.best.score, self.inp.study.direction):
                s.best = result
        elif result.state == "PRUNED":
            s.pruned += 1
        elif result.state == "CANCELLED":
            s.cancelled += 1
        else:
            s.failed += 1
            s.first_error = s.first_error or result.error
        s.trial_seconds += result.duration_seconds
        self._unrecorded.append(result)

    async def _stop_running(self) -> None:
        for task in self._running.values():
            task.cancel()
        for number, task in list(self._running.items()):
            try:
                result = await task
            except asyncio.CancelledError:
                spec = self._specs[number]
                result = TrialResult(number=number, trial_id=spec.trial_id, state="CANCELLED", params=spec.params,
                                     error="stopped by the time budget or a cancel")
            self._count(result)
        self._running.clear()

    async def _tell_unrun(self) -> None:
        """Parameters asked but never run: record them as cancelled so the study holds no stale trial."""
        for spec in self._queue:
            self._count(TrialResult(number=spec.number, trial_id=spec.trial_id, state="CANCELLED",
                                    params=spec.params, error="not started: the search ended"))
        self._queue.clear()

    def _record(self) -> None:
        """Record a batch in the background (one batch in flight at a time); a failed batch fails the run."""
        if self._recorder is not None:
            if not self._recorder.done():
                return
            self._recorder.result()
            self._recorder = None
        due = (workflow.now() - self._last_record).total_seconds() >= RECORD_SECONDS
        if not self._unrecorded or not (due or len(self._unrecorded) >= RECORD_EVERY):
            return
        batch, self._unrecorded = self._unrecorded, []
        self._last_record = workflow.now()
        self._recorder = asyncio.create_task(self._record_batch(batch))

    async def _record_batch(self, batch: list[TrialResult]) -> None:
        await self._io("record_trials", RecordTrialsInput(job_id=self.inp.job_id, study=self.inp.study,
                                                          results=batch, mlflow_run_id=self.inp.mlflow_run_id))

    async def _flush_records(self) -> None:
        if self._recorder is not None:
            await self._recorder
            self._recorder = None
        if self._unrecorded:
            batch, self._unrecorded = self._unrecorded, []
            await self._record_batch(batch)

    def _report_progress(self) -> None:
        """Signal the parent (fire and forget: a lost update is replaced by the next one)."""
        if (workflow.now() - self._last_progress).total_seconds() < PROGRESS_SECONDS:
            return
        self._last_progress = workflow.now()
        self._signals.append(asyncio.create_task(self._signal_parent(self.progress())))
        self._signals = [t for t in self._signals if not t.done()]

    async def _signal_parent(self, progress: TuningProgress) -> None:
        try:
            await workflow.get_external_workflow_handle(self.inp.parent_id).signal("tuning_progress", progress)
        except Exception as exc:  # noqa: BLE001 - progress is advisory; the next update replaces it
            workflow.logger.info("progress signal to %s failed: %s", self.inp.parent_id, exc)

    def progress(self) -> TuningProgress:
        s, inp = self.state, self.inp
        mean = s.trial_seconds / s.finished if s.finished else None
        eta = None
        if mean is not None:
            left = max(inp.study.limit - s.finished, 0)
            seconds = min(mean * left / max(inp.parallel, 1), (inp.deadline - workflow.now()).total_seconds())
            eta = workflow.now() + timedelta(seconds=max(seconds, 0))
        return TuningProgress(family=inp.study.family, completed=s.completed, pruned=s.pruned, failed=s.failed,
                              running=len(self._running), total=inp.study.limit,
                              best_score=s.best.score if s.best else None, mean_trial_seconds=mean, eta=eta)

    @workflow.query(name="progress")
    def progress_query(self) -> TuningProgress:
        return self.progress()

    def _result(self, stopped_by: str) -> TuningResult:
        s = self.state
        return TuningResult(family=self.inp.study.family, best=s.best, trials=s.finished, completed=s.completed,
                            pruned=s.pruned, failed=s.failed, cancelled=s.cancelled, stopped_by=stopped_by,
                            error=s.first_error)

    async def _io(self, name: str, arg, result_type=None):
        return await workflow.execute_activity(name, arg, result_type=result_type,
                                               start_to_close_timeout=timedelta(minutes=2), retry_policy=IO_RETRY)


def _better(score: float | None, best: float | None, direction: str) -> bool:
    if score is None:
        return False
    if best is None:
        return True
    return score > best if direction == "maximize" else score < best


def _is_cancel(exc: BaseException) -> bool:
    from temporalio.exceptions import is_cancelled_exception

    return is_cancelled_exception(exc)


def _trials_queue() -> str:
    return str(workflow.memo_value("trials_task_queue", default="pmls-trials"))

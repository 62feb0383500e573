"""TuningWorkflow: one Optuna study for one model family, trials fanned out over the trials queue.

Workflow id ``{job_id}/{family}``. Each trial slot runs a *batch* of trials as one activity with the
deterministic id ``trials-{k}`` (ask, cross-validate, tell, back to back for ~10 s; a long trial is a
batch of one): a child workflow or an activity per trial would cost a large share of a short trial in
dispatch and server CPU (the README's ``bench/overhead`` notes have the figures).
Trials are keyed ``trials-{k}/{i}`` in the study, so a retried batch repeats none; a batch that is
cancelled or fails for good has its trials settled from the study (``collect_trials``). Results are recorded
in the background: rows every few seconds, nested MLflow runs every 2 minutes (the last ones are handed
to the parent, which logs them beside the final fit). The history stays bounded by
continuing as new; the study (PostgreSQL) is the source of truth.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

from workflows.calls import TRIAL_RETRY, io, trials_queue
from workflows.patches import MLFLOW_RUN_PATCH

with workflow.unsafe.imports_passed_through():
    from pmls.contracts import activities as contract
    from pmls.contracts.temporal import (
        PROGRESS_QUERY,
        STOP_SEARCH_SIGNAL,
        TUNING_PROGRESS_SIGNAL,
        TUNING_WORKFLOW,
        WIDEN_SIGNAL,
    )
    from pmls.contracts.tuning import (
        CollectInput,
        LogTrialsInput,
        RecordTrialsInput,
        TrialBatch,
        TrialBatchInput,
        TrialResult,
        TuningInput,
        TuningProgress,
        TuningResult,
        TuningState,
    )

ROWS_EVERY, ROWS_SECONDS = 10, 5.0
# Nested MLflow runs cost MLflow server CPU, taken from the trials while they run: a long search
# logs them every 2 minutes, a short one only at its end, where the parent logs them beside the final fit.
MLFLOW_EVERY, MLFLOW_SECONDS = 100, 120.0
PRE_PATCH_MLFLOW_EVERY, PRE_PATCH_MLFLOW_SECONDS = 20, 15.0  # searches started before MLFLOW_RUN_PATCH
PROGRESS_SECONDS = 2.0
BATCH_SECONDS = 10.0


@workflow.defn(name=TUNING_WORKFLOW)
class TuningWorkflow:
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task] = {}  # batch id -> its activity
        self._exhausted = False
        self._channels: list[_Channel] = []
        self._runs: _Channel | None = None  # the nested MLflow runs' channel, when the job has a run
        self._finished_at_start = 0  # trials finished by the runs before this one (continue-as-new)
        self._hand_over = False  # the last nested MLflow runs go to the parent (MLFLOW_RUN_PATCH)
        self._last_progress = None
        self._signals: list[asyncio.Task] = []
        self._outpaced = False  # the parent stopped this family for the leaders (ENSEMBLE)
        self._widened = False  # the parent gave this family more slots

    @workflow.run
    async def run(self, inp: TuningInput) -> TuningResult:
        self.inp, self.state = inp, inp.state or TuningState()
        self._finished_at_start = self.state.finished
        self._last_progress = workflow.now()
        # Rows (PostgreSQL, Redis) soon after each batch; nested MLflow runs, the costlier write, seldom.
        # Searches started since MLFLOW_RUN_PATCH log nested runs seldom and hand the last ones to the parent;
        # one started before keeps its cadence (a cadence change alters the commands a replay expects).
        self._hand_over = workflow.patched(MLFLOW_RUN_PATCH)
        every, seconds = (
            (MLFLOW_EVERY, MLFLOW_SECONDS)
            if self._hand_over
            else (PRE_PATCH_MLFLOW_EVERY, PRE_PATCH_MLFLOW_SECONDS)
        )
        self._runs = _Channel(self._log_runs, every, seconds, workflow.now()) if inp.mlflow_run_id else None
        self._channels = [
            _Channel(self._record_rows, ROWS_EVERY, ROWS_SECONDS, workflow.now()),
            *([self._runs] if self._runs else []),
        ]
        try:
            stopped_by = await self._search()
        except BaseException:
            # A cancel or an error: stop what runs, keep (and record) what finished.
            await self._stop_running()
            await self._flush_records()
            raise
        # A budget stop cancels the running batches; the end of the trials finds none running.
        await self._stop_running()
        if not stopped_by:
            await self._flush_records()
            workflow.continue_as_new(inp.model_copy(update={"state": self.state}))
        # The rows are written before the search closes; the last nested MLflow runs go to the parent, which
        # logs them beside the final fit (they are the costliest write).
        await self._flush_records(keep_runs=self._hand_over)
        return self._result(stopped_by)

    async def _search(self) -> str:
        """Keep the slots busy until a stop: why it stopped, or "" to continue as new."""
        draining = False
        while True:
            stopped_by = self._stop_reason()
            if stopped_by:
                return stopped_by
            # Before continuing as new, let the running batches finish (~10 s) rather than cancel them.
            draining = draining or self._run_left() <= 0 or self._suggest_continue()
            if not draining:
                self._fill_slots()
            if not self._running:
                return "" if draining else "exhausted"
            # Bookkeeping runs beside the trials, never between one batch and the next.
            self._record()
            self._report_progress()
            await self._wait_for_a_batch()

    # -- the loop --------------------------------------------------------------------------------
    def _stop_reason(self) -> str:
        s, hp = self.state, self.inp.hyperparameter_config
        if self._outpaced:
            return "outpaced"
        if s.finished >= self.inp.study.limit:
            return "trials"
        if workflow.now() >= self.inp.deadline:
            return "timeout"
        if s.failed >= 4 and s.failed > hp.max_failed_trial_share * max(s.finished, 1):
            return "failures"
        return ""

    def _run_left(self) -> int:
        """Trials this run may still finish before it continues as new."""
        return self.inp.trials_per_run - (self.state.finished - self._finished_at_start)

    def _suggest_continue(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()

    def _fill_slots(self) -> None:
        """One batch per free slot while the budget may have room (the study enforces it exactly)."""
        s, inp = self.state, self.inp
        while (
            not self._exhausted
            and len(self._running) < inp.parallel
            and s.finished + len(self._running) < inp.study.limit
        ):
            s.batches += 1
            batch = f"trials-{s.batches}"
            self._running[batch] = asyncio.create_task(self._batch(batch))

    async def _batch(self, batch: str) -> TrialBatch:
        inp = self.inp
        try:
            return await workflow.execute_activity_method(
                contract.Trials.run_trials,
                TrialBatchInput(
                    job_id=inp.job_id,
                    study=inp.study,
                    batch=batch,
                    prepared=inp.prepared,
                    dataset_config=inp.dataset_config,
                    seed=inp.seed,
                    max_trials=max(1, min(inp.study.limit - self.state.finished, self._run_left())),
                    batch_seconds=BATCH_SECONDS,
                    deadline=inp.deadline,
                ),
                activity_id=batch,
                task_queue=trials_queue(),
                start_to_close_timeout=timedelta(hours=4),
                heartbeat_timeout=timedelta(seconds=20),
                retry_policy=TRIAL_RETRY,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as exc:
            if _is_cancel(exc):
                raise  # settled by _stop_running
            reason = getattr(exc.cause, "message", None) or str(exc)
            return TrialBatch(results=await self._collect(batch, "FAILED", reason))

    async def _collect(self, batch: str, state: str, error: str) -> list[TrialResult]:
        return await io(
            contract.Studies.collect_trials,
            CollectInput(study=self.inp.study, batch=batch, state=state, error=error),
        )

    async def _wait_for_a_batch(self) -> None:
        remaining = (self.inp.deadline - workflow.now()).total_seconds()
        try:
            # A stop or wider slots from the parent (ENSEMBLE) take effect at once, not after the next batch.
            await workflow.wait_condition(
                lambda: self._outpaced or self._widened or any(t.done() for t in self._running.values()),
                timeout=max(remaining, 0.001),
            )
        except TimeoutError:
            return
        self._widened = False
        for batch in [b for b, t in self._running.items() if t.done()]:
            self._take(self._running.pop(batch).result())

    def _take(self, batch: TrialBatch) -> None:
        self._exhausted = self._exhausted or batch.exhausted
        for result in batch.results:
            self._count(result)

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
        for channel in self._channels:
            channel.pending.append(result)

    async def _stop_running(self) -> None:
        """Cancel the running batches; what each told stays, what each left running is settled CANCELLED."""
        for task in self._running.values():
            task.cancel()
        for batch, task in list(self._running.items()):
            try:
                self._take(await task)
            except (asyncio.CancelledError, ActivityError):
                self._take(
                    TrialBatch(
                        results=await self._collect(
                            batch, "CANCELLED", "stopped by the time budget or a cancel"
                        )
                    )
                )
        self._running.clear()

    def _record(self) -> None:
        for channel in self._channels:
            channel.poll(workflow.now())

    async def _flush_records(self, *, keep_runs: bool = False) -> None:
        """Send what waits on every channel; with ``keep_runs`` the nested MLflow runs stay pending
        (``_result`` hands them to the parent)."""
        await asyncio.gather(
            *(channel.flush(send=not (keep_runs and channel is self._runs)) for channel in self._channels)
        )

    async def _record_rows(self, batch: list[TrialResult]) -> None:
        await io(
            contract.Studies.record_trials,
            RecordTrialsInput(job_id=self.inp.job_id, study=self.inp.study, results=batch),
        )

    async def _log_runs(self, batch: list[TrialResult]) -> None:
        await io(
            contract.Studies.log_trials,
            LogTrialsInput(mlflow_run_id=self.inp.mlflow_run_id, family=self.inp.study.family, results=batch),
        )

    def _report_progress(self) -> None:
        """Signal the parent (fire and forget: a lost update is replaced by the next one)."""
        if (workflow.now() - self._last_progress).total_seconds() < PROGRESS_SECONDS:
            return
        self._last_progress = workflow.now()
        self._signals.append(asyncio.create_task(self._signal_parent(self.progress())))
        self._signals = [t for t in self._signals if not t.done()]

    async def _signal_parent(self, progress: TuningProgress) -> None:
        try:
            await workflow.get_external_workflow_handle(self.inp.parent_id).signal(
                TUNING_PROGRESS_SIGNAL, progress
            )
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
        return TuningProgress(
            family=inp.study.family,
            completed=s.completed,
            pruned=s.pruned,
            failed=s.failed,
            running=len(self._running),
            total=inp.study.limit,
            best_score=s.best.score if s.best else None,
            mean_trial_seconds=mean,
            eta=eta,
        )

    @workflow.query(name=PROGRESS_QUERY)
    def progress_query(self) -> TuningProgress:
        return self.progress()

    @workflow.signal(name=STOP_SEARCH_SIGNAL)
    def stop_search(self) -> None:
        """The parent gives this family's remaining time to others: running trials stop, finished ones count."""
        self._outpaced = True

    @workflow.signal(name=WIDEN_SIGNAL)
    def widen(self, parallel: int) -> None:
        """More slots for this family (others were stopped); batches start as slots free up."""
        if parallel > self.inp.parallel:
            self.inp = self.inp.model_copy(update={"parallel": parallel})
            self._widened = True

    def _result(self, stopped_by: str) -> TuningResult:
        s = self.state
        unlogged = list(self._runs.pending) if self._runs else []
        return TuningResult(
            family=self.inp.study.family,
            best=s.best,
            trials=s.finished,
            completed=s.completed,
            pruned=s.pruned,
            failed=s.failed,
            cancelled=s.cancelled,
            stopped_by=stopped_by,
            error=s.first_error,
            unlogged=unlogged,
        )


class _Channel:
    """Results waiting for one kind of write, sent in the background in batches, one batch in flight; a
    batch that fails for good fails the run."""

    def __init__(self, send, every: int, seconds: float, now) -> None:
        self.send, self.every, self.seconds, self.last = send, every, seconds, now
        self.pending: list[TrialResult] = []
        self.task: asyncio.Task | None = None

    def poll(self, now) -> None:
        if self.task is not None:
            if not self.task.done():
                return
            self.task.result()
            self.task = None
        due = (now - self.last).total_seconds() >= self.seconds
        if self.pending and (due or len(self.pending) >= self.every):
            batch, self.pending, self.last = self.pending, [], now
            self.task = asyncio.create_task(self.send(batch))

    async def flush(self, *, send: bool = True) -> None:
        """Wait for the batch in flight; then send what is pending, or (``send=False``) leave it pending."""
        if self.task is not None:
            await self.task
            self.task = None
        if send and self.pending:
            batch, self.pending = self.pending, []
            await self.send(batch)


def _better(score: float | None, best: float | None, direction: str) -> bool:
    if score is None:
        return False
    if best is None:
        return True
    return score > best if direction == "maximize" else score < best


def _is_cancel(exc: BaseException) -> bool:
    from temporalio.exceptions import is_cancelled_exception

    return is_cancelled_exception(exc)

"""TuningWorkflow: one Optuna study for one model family, trials fanned out over the trials queue.

Workflow id ``{job_id}/{family}``. Each trial slot runs a *batch* of trials as one activity with the
deterministic id ``trials-{k}`` (ask, cross-validate, tell, back to back for ~10 s; a long trial is a
batch of one): a child workflow or an activity per trial would cost a large share of a short trial in
dispatch and server CPU (the README's ``bench/overhead`` notes have the figures).
Trials are keyed ``trials-{k}/{i}`` in the study, so a retried batch repeats none; a batch that is
cancelled or fails for good has its trials settled from the study (``collect_trials``). The slot that tells a
trial writes its row; only decisions (counts, the best trial) come back here. Nested MLflow runs are logged
from the study every 2 minutes (those of the last trials by the parent, beside the final fit). The history
stays bounded by continuing as new; the study (PostgreSQL) is the source of truth.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

from workflows.calls import TRIAL_RETRY, io, outage_budget, trials_queue

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
        TrialBatch,
        TrialBatchInput,
        TrialResult,
        TuningInput,
        TuningProgress,
        TuningResult,
        TuningState,
    )

# Nested MLflow runs cost MLflow server CPU, taken from the trials while they run: a long search
# logs them every 2 minutes, a short one only at its end, where the parent logs them beside the final fit.
MLFLOW_EVERY, MLFLOW_SECONDS = 100, 120.0
PROGRESS_SECONDS = 2.0
BATCH_SECONDS = 10.0


@workflow.defn(name=TUNING_WORKFLOW)
class TuningWorkflow:
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task] = {}  # batch id -> its activity
        self._exhausted = False
        self._runs: _RunLog | None = None  # the nested MLflow runs, when the job has a run
        self._finished_at_start = 0  # trials finished by the runs before this one (continue-as-new)
        self._last_progress = None
        self._signals: list[asyncio.Task] = []
        self._outpaced = False  # the parent stopped this family for the leaders (ENSEMBLE)
        self._widened = False  # the parent gave this family more slots

    @workflow.run
    async def run(self, inp: TuningInput) -> TuningResult:
        self.inp, self.state = inp, inp.state or TuningState()
        self._finished_at_start = self.state.finished
        self._last_progress = workflow.now()
        if inp.mlflow_run_id:
            self._runs = _RunLog(self._log_runs, MLFLOW_EVERY, MLFLOW_SECONDS, workflow.now())
        try:
            stopped_by = await self._search()
        except BaseException:
            # A cancel or an error: stop what runs, settle what it left, log what finished.
            await self._stop_running()
            await self._flush_runs()
            raise
        # A budget stop cancels the running batches; the end of the trials finds none running.
        await self._stop_running()
        if not stopped_by:
            await self._flush_runs()
            workflow.continue_as_new(inp.model_copy(update={"state": self.state}))
        # The last nested MLflow runs go to the parent, which logs them beside the final fit (the costliest write).
        await self._flush_runs(send=False)
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
                start_to_close_timeout=timedelta(hours=4) + outage_budget(),
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
            CollectInput(job_id=self.inp.job_id, study=self.inp.study, batch=batch, state=state, error=error),
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
        if self._runs is not None:
            self._runs.pending += 1

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
        if self._runs is not None:
            self._runs.poll(workflow.now())

    async def _flush_runs(self, *, send: bool = True) -> None:
        """Wait for the nested runs being logged; then log the rest, or (``send=False``) leave them to
        the parent (``_result`` says how many)."""
        if self._runs is not None:
            await self._runs.flush(send=send)

    async def _log_runs(self) -> None:
        await io(
            contract.Studies.log_trials,
            LogTrialsInput(mlflow_run_id=self.inp.mlflow_run_id, study=self.inp.study),
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
            unlogged=self._runs.pending if self._runs else 0,
        )


class _RunLog:
    """Nested MLflow runs logged in the background from the study, one call in flight; a call that fails for
    good fails the run. ``pending`` counts the trials finished since the last call."""

    def __init__(self, send, every: int, seconds: float, now) -> None:
        self.send, self.every, self.seconds, self.last = send, every, seconds, now
        self.pending = 0
        self.task: asyncio.Task | None = None

    def poll(self, now) -> None:
        if self.task is not None:
            if not self.task.done():
                return
            self.task.result()
            self.task = None
        due = (now - self.last).total_seconds() >= self.seconds
        if self.pending and (due or self.pending >= self.every):
            self.pending, self.last = 0, now
            self.task = asyncio.create_task(self.send())

    async def flush(self, *, send: bool = True) -> None:
        if self.task is not None:
            await self.task
            self.task = None
        if send and self.pending:
            self.pending = 0
            await self.send()


def _better(score: float | None, best: float | None, direction: str) -> bool:
    if score is None:
        return False
    if best is None:
        return True
    return score > best if direction == "maximize" else score < best


def _is_cancel(exc: BaseException) -> bool:
    from temporalio.exceptions import is_cancelled_exception

    return is_cancelled_exception(exc)

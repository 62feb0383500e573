"""TrainingWorkflow: one job, durably, from request to registered model. Workflow id = job id."""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, is_cancelled_exception

from workflows.calls import child_memo, cpu, io
from workflows.patches import AUTO_DEPLOY, JOB_DEADLINE
from workflows.tuning import TuningWorkflow

with workflow.unsafe.imports_passed_through():
    from pmls.contracts import (
        SUPPORTED_MODEL_TYPES,
        SUPPORTED_TRAINING_MODES,
        ModelType,
        TrainingMetrics,
        TrainingStatus,
    )
    from pmls.contracts import activities as contract
    from pmls.contracts.deployment import DeployInput
    from pmls.contracts.durations import parse_duration
    from pmls.contracts.models import DeploymentResult, ModelArtifact
    from pmls.contracts.params import ensemble_families, fixed_parameters
    from pmls.contracts.temporal import (
        CANCEL_SIGNAL,
        MEMO_MAX_RUNNING,
        MEMO_TRIAL_SLOTS,
        MEMO_TRIALS_PER_RUN,
        PROGRESS_QUERY,
        STATUS_KEY,
        TRAINING_WORKFLOW,
        TUNING_PROGRESS_SIGNAL,
    )
    from pmls.contracts.tuning import (
        TRIALS_PER_RUN,
        CreateStudyInput,
        EndRunInput,
        LogTrialsInput,
        StartRunInput,
        TuningInput,
        TuningProgress,
        TuningResult,
    )
    from pmls.contracts.workflow import (
        BuildEnsembleInput,
        CompareChampionInput,
        CompleteJobInput,
        CrossValidateInput,
        CVScore,
        EnsembleCandidate,
        FitFinalInput,
        LoadDatasetInput,
        PreparedRef,
        PrepareInput,
        Progress,
        RegisterModelInput,
        SplitDatasetInput,
        TrainingOutcome,
        TrainingWorkflowInput,
        TurnInput,
    )

# An ENSEMBLE search stops its trailing families at these shares of the tuning window (once every family still
# searching has finished a trial), keeping the better half and never fewer than MIN_LEADERS families.
RUNGS = (1 / 3, 2 / 3)
MIN_LEADERS = 2

# (stage, progress when it starts)
STAGES = {
    "validating": 1,
    "loading_data": 5,
    "splitting": 10,
    "preparing": 15,
    "cross_validating": 25,
    "tuning": 25,
    "training": 75,
    "comparing": 85,
    "registering": 88,
    "deploying": 92,
    "publishing": 95,
    "completed": 100,
}


@workflow.defn(name=TRAINING_WORKFLOW)
class TrainingWorkflow:
    def __init__(self) -> None:
        self._job_id = ""
        self._status = TrainingStatus.QUEUED
        self._stage = "queued"
        self._progress = 0.0
        self._metrics: TrainingMetrics | None = None
        self._model_id: str | None = None
        self._error: str | None = None
        self._started = None
        self._pipeline: asyncio.Task | None = None
        self._cancel_reason: str | None = None
        self._deadline_passed = False
        self._turn_limit: int | None = None
        self._admitted = True
        self._trials = 0
        self._tuning: TuningProgress | None = None
        self._tuning_by_family: dict[str, TuningProgress] = {}
        self._tuning_eta = None
        self._folds = 1
        self._dirty = False
        self._mlflow_run: asyncio.Task | None = None  # -> the job's MLflow run id, when the job tunes
        self._trial_logs: list[asyncio.Task] = []
        self._leaders: _Leaders | None = None  # an ENSEMBLE search that follows its leading families
        self._allocation: dict[str, dict] = {}

    @workflow.run
    async def run(self, inp: TrainingWorkflowInput) -> TrainingOutcome:
        self._job_id = inp.job_id
        self._started = workflow.now()
        limit = workflow.memo_value(MEMO_MAX_RUNNING, default=None)
        self._turn_limit = int(limit) if limit else None  # fixed per execution: replay takes the same path
        self._admitted = self._turn_limit is None
        self._pipeline = asyncio.create_task(self._run_pipeline(inp))
        deadline = asyncio.create_task(self._deadline(inp)) if workflow.patched(JOB_DEADLINE) else None
        try:
            return await self._pipeline
        except BaseException as exc:
            if self._deadline_passed:
                return await self._fail(self._deadline_error(inp))
            if not (isinstance(exc, asyncio.CancelledError) or is_cancelled_exception(exc)):
                if isinstance(exc, Exception):
                    return await self._fail(exc)
                raise
            await self._close_mlflow_run("KILLED")
            await self._finish(
                TrainingStatus.CANCELLED, "cancelled", error=self._cancel_reason or "cancelled"
            )
            if self._cancel_reason is None or deadline is not None:
                raise  # the execution closes as Cancelled
            return self._outcome()
        finally:
            if deadline is not None:
                deadline.cancel()

    async def _deadline(self, inp: TrainingWorkflowInput) -> None:
        """job_timeout bounds the whole job from the moment it runs (not its wait in the queue): when it passes,
        the running stage is stopped and the job fails."""
        if not self._admitted:
            await workflow.wait_condition(lambda: self._admitted)
        await asyncio.sleep(self._seconds_left(inp))
        if self._pipeline is not None and not self._pipeline.done():
            self._deadline_passed = True
            self._pipeline.cancel()

    def _seconds_left(self, inp: TrainingWorkflowInput) -> float:
        limit = parse_duration(inp.request.job_timeout).total_seconds()
        return max(limit - (workflow.now() - self._started).total_seconds(), 0.001)

    def _deadline_error(self, inp: TrainingWorkflowInput) -> ApplicationError:
        return ApplicationError(
            f"job_timeout: the job's deadline ({inp.request.job_timeout}) passed while {self._stage}; the "
            "stage was stopped. Raise job_timeout, or give the search less time (optimization_timeout)",
            type="DeadlineExceeded",
            non_retryable=True,
        )

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel(self, reason: str | None = None) -> None:
        """Stop the job: running activities are cancelled through their heartbeats."""
        self._cancel_reason = reason or "cancelled by request"
        if self._pipeline is None or self._pipeline.done():
            return
        if workflow.patched(JOB_DEADLINE):
            # Temporal's own cancel, asked for by the workflow itself: the execution closes as Cancelled.
            asyncio.create_task(self._cancel_execution())
        else:
            self._pipeline.cancel()

    async def _cancel_execution(self) -> None:
        try:
            await io(contract.Jobs.cancel_execution, self._job_id, timeout=timedelta(seconds=30))
        except Exception as exc:  # noqa: BLE001 - refused: stop the pipeline all the same
            workflow.logger.warning("could not have the execution cancelled: %s", exc)
            if self._pipeline is not None:
                self._pipeline.cancel()

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> Progress:
        return Progress(
            job_id=self._job_id,
            status=self._status,
            stage=self._stage,
            progress_percentage=self._progress,
            metrics=self._metrics,
            started_at=self._started,
            estimated_completion=self._eta(),
            model_id=self._model_id,
            error=self._error,
            run_id=workflow.info().run_id,
            at=workflow.now(),
        )

    # -- the stages ----------------------------------------------------------------------------
    async def _run_pipeline(self, inp: TrainingWorkflowInput) -> TrainingOutcome:
        req, job_id = inp.request, inp.job_id
        cfg = req.dataset_config
        if self._turn_limit is not None:
            await self._wait_for_turn(job_id, self._turn_limit)
        await self._enter("validating", status=TrainingStatus.RUNNING)
        self._validate(inp)
        seed = req.random_seed if req.random_seed is not None else workflow.random().randint(0, 2**31 - 1)
        if req.hyperparameter_config.tunes:
            # The job's MLflow run (the trials nest under it), created beside load, split and preparation.
            self._mlflow_run = asyncio.create_task(self._start_mlflow_run(inp, seed))

        await self._enter("loading_data")
        dataset = await cpu(
            contract.Data.load_dataset,
            LoadDatasetInput(job_id=job_id, dataset_config=cfg),
            timeout=timedelta(minutes=30),
        )
        await self._enter("splitting")
        splits = await cpu(
            contract.Data.split_dataset,
            SplitDatasetInput(job_id=job_id, dataset=dataset, dataset_config=cfg, seed=seed),
            timeout=timedelta(minutes=30),
        )
        await self._enter("preparing")
        prepared = await cpu(
            contract.Data.prepare_features,
            PrepareInput(
                job_id=job_id,
                splits=splits,
                dataset_config=cfg,
                validation_config=req.validation_config,
                seed=seed,
            ),
            timeout=timedelta(hours=1),
        )
        found = await self._candidates(inp, prepared, seed)
        if self._allocation:
            self._metrics = TrainingMetrics(search_allocation=self._allocation)
        await self._enter("training")
        if req.model_type is ModelType.ENSEMBLE:
            candidates = [EnsembleCandidate(model_type=f, params=p, cv=cv) for f, p, cv in found]
            trained = await cpu(
                contract.Training.build_ensemble,
                BuildEnsembleInput(
                    job_id=job_id,
                    prepared=prepared,
                    dataset_config=cfg,
                    candidates=candidates,
                    seed=seed,
                    bag_folds=req.validation_config.bag_folds,
                    refit_full=req.validation_config.refit_full,
                ),
                timeout=timedelta(hours=4),
            )
        else:
            _family, params, cv = found[0]
            self._metrics = TrainingMetrics(cross_validation_scores=cv.scores)
            trained = await cpu(
                contract.Training.fit_final,
                FitFinalInput(
                    job_id=job_id,
                    prepared=prepared,
                    dataset_config=cfg,
                    model_type=req.model_type,
                    params=params,
                    seed=seed,
                    cv=cv,
                    refit_full=req.validation_config.refit_full,
                ),
                timeout=timedelta(hours=4),
            )
        if self._allocation:
            trained = trained.model_copy(
                update={"metrics": trained.metrics.model_copy(update={"search_allocation": self._allocation})}
            )
        self._metrics = trained.metrics
        await self._trial_runs_logged()
        await self._enter("comparing")
        comparison = await cpu(
            contract.Champion.compare_champion,
            CompareChampionInput(
                job_id=job_id, request=req, splits=splits, prepared=prepared, trained=trained
            ),
            timeout=timedelta(minutes=30),
        )
        await self._enter("registering")
        registered = await io(
            contract.Jobs.register_model,
            RegisterModelInput(
                job_id=job_id, request=req, splits=splits, trained=trained, comparison=comparison
            ),
            timeout=timedelta(minutes=10),
        )
        self._model_id = registered.model_id
        completion = CompleteJobInput(
            job_id=job_id,
            request=req,
            trained=trained,
            registered=registered,
            started_at=self._started,
            finished_at=workflow.now(),
            hyperparameter_trials=self._trials,
            comparison=comparison,
            run_id=workflow.info().run_id,
        )
        deployment = None
        if req.deployment_config.auto_deploy and workflow.patched(AUTO_DEPLOY):
            deployment = await self._deploy(completion)
        await self._enter("publishing")
        artifact = await io(contract.Jobs.complete_job, completion, timeout=timedelta(minutes=5))
        self._status, self._stage, self._progress = TrainingStatus.COMPLETED, "completed", 100.0
        await self._set_search_status()
        deployed = f"; {deployment.status} as {deployment.alias}" if deployment else ""
        workflow.set_current_details(f"COMPLETED: {artifact.model_id} ({_headline(artifact)}){deployed}")
        return TrainingOutcome(
            job_id=job_id,
            status=self._status,
            model_id=artifact.model_id,
            artifact=artifact,
            deployment=deployment,
        )

    async def _deploy(self, completion: CompleteJobInput) -> DeploymentResult:
        """The deploy stage: the artifact is recorded, then the lineage workflow promotes the model if its gates
        pass (a refusal is an answer, REJECTED, not a failure of the job)."""
        await self._enter("deploying")
        artifact = await io(contract.Jobs.record_artifact, completion, timeout=timedelta(minutes=5))
        return await io(
            contract.Deployments.deploy_model,
            DeployInput(
                job_id=completion.job_id,
                artifact=artifact,
                config=completion.request.deployment_config,
                requested_by=None,
            ),
            timeout=timedelta(minutes=30),
        )

    async def _wait_for_turn(self, job_id: str, limit: int) -> None:
        """PMLS_MAX_RUNNING_JOBS: stay QUEUED until fewer than ``limit`` jobs run and this one is next."""
        workflow.set_current_details(f"QUEUED: waiting for one of {limit} running slots")
        await io(
            contract.Jobs.wait_for_turn, TurnInput(job_id=job_id, limit=limit), timeout=timedelta(days=7)
        )
        self._started, self._admitted = workflow.now(), True

    async def _candidates(self, inp: TrainingWorkflowInput, prepared: PreparedRef, seed: int) -> list:
        """(family, parameters, CV score) per family: tuned, or the fixed parameters cross-validated."""
        req = inp.request
        families = (
            [req.model_type]
            if req.model_type is not ModelType.ENSEMBLE
            else ensemble_families(req.dataset_config.timestamp_column, req.dataset_config.entity_column)
        )
        if req.hyperparameter_config.tunes:
            return await self._search(inp, prepared, seed, families)
        await self._enter("cross_validating")
        fixed = fixed_parameters(req.hyperparameter_config.search_space)
        cvs = await asyncio.gather(
            *(
                cpu(
                    contract.Training.cross_validate,
                    CrossValidateInput(
                        job_id=inp.job_id,
                        prepared=prepared,
                        dataset_config=req.dataset_config,
                        model_type=family,
                        params=fixed,
                        seed=seed,
                    ),
                    timeout=timedelta(hours=4),
                )
                for family in families
            )
        )
        return [(family, fixed, cv) for family, cv in zip(families, cvs, strict=True)]

    async def _search(
        self, inp: TrainingWorkflowInput, prepared: PreparedRef, seed: int, families: list
    ) -> list:
        """One TuningWorkflow child per family, in parallel; each family goes on with its best complete trial."""
        req, job_id = inp.request, inp.job_id
        hp = req.hyperparameter_config
        await self._enter("tuning")
        share = (
            hp.optimization_trials if len(families) == 1 else max(2, hp.optimization_trials // len(families))
        )
        family_hp = hp.model_copy(update={"optimization_trials": share})
        slots = hp.max_parallel_trials or int(workflow.memo_value(MEMO_TRIAL_SLOTS, default=2))
        deadline, self._folds = self._tuning_deadline(req), max(prepared.cv_folds, 1)

        def create(family: ModelType):
            return io(
                contract.Studies.create_study,
                CreateStudyInput(
                    job_id=job_id,
                    family=family,
                    hyperparameter_config=family_hp,
                    prepared=prepared,
                    seed=seed,
                ),
            )

        studies = await asyncio.gather(*(create(family) for family in families))
        run_id = await self._mlflow_run
        parallel = max(1, slots // len(families))
        if len(families) > 1:
            self._leaders = _Leaders(
                {f.value: s.study for f, s in zip(families, studies, strict=True)},
                parallel,
                slots,
                workflow.now(),
                deadline,
                prepared.higher_is_better,
            )
        tasks = []
        for family, study in zip(families, studies, strict=True):
            child = TuningInput(
                job_id=job_id,
                parent_id=workflow.info().workflow_id,
                mlflow_run_id=run_id,
                study=study,
                prepared=prepared,
                dataset_config=req.dataset_config,
                hyperparameter_config=family_hp,
                seed=seed,
                parallel=parallel,
                deadline=deadline,
                trials_per_run=int(workflow.memo_value(MEMO_TRIALS_PER_RUN, default=TRIALS_PER_RUN)),
            )
            tasks.append(
                (
                    study,
                    asyncio.create_task(
                        workflow.execute_child_workflow(
                            TuningWorkflow.run,
                            child,
                            id=study.study,
                            memo=child_memo(),
                            static_summary=f"tuning {family.value}: {study.limit} trials, {study.method}",
                        )
                    ),
                )
            )
        if self._leaders is not None:
            self._leaders.children = {s.family.value: t for s, t in tasks}
        await self._await_children([t for _, t in tasks])
        results = [(study, task.result()) for study, task in tasks]
        if self._leaders is not None:
            self._allocation = self._leaders.allocation(results)
        if run_id:
            # The searches' last nested runs, logged while the final model fits (awaited before comparing).
            self._trial_logs = [
                asyncio.create_task(
                    io(
                        contract.Studies.log_trials,
                        LogTrialsInput(mlflow_run_id=run_id, study=study),
                    )
                )
                for study, result in results
                if result.unlogged
            ]
        return self._best_per_family(prepared, results)

    async def _start_mlflow_run(self, inp: TrainingWorkflowInput, seed: int) -> str:
        return await io(
            contract.Studies.start_mlflow_run,
            StartRunInput(job_id=inp.job_id, request=inp.request, seed=seed),
        )

    async def _trial_runs_logged(self) -> None:
        """Wait for the nested trial runs the searches handed over (an error here fails the job)."""
        logs, self._trial_logs = self._trial_logs, []
        await asyncio.gather(*logs)

    async def _close_mlflow_run(self, status: str) -> None:
        """On a failed or cancelled job, before its status is recorded: the trial runs handed over are
        logged and the job's run is closed with the job's status instead of being left RUNNING. Best effort
        (a few attempts): the job's own outcome stands whatever MLflow answers."""
        with contextlib.suppress(Exception):
            await self._trial_runs_logged()
        if self._mlflow_run is None:
            return
        with contextlib.suppress(Exception):
            run_id = await self._mlflow_run
            await workflow.execute_activity_method(
                contract.Studies.end_mlflow_run,
                EndRunInput(mlflow_run_id=run_id, status=status),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )

    async def _await_children(self, tasks: list) -> None:
        group = asyncio.gather(*tasks)
        try:
            await self._record_while(group)
            await group
        except BaseException:
            # Cancel the searches and wait until their trials have stopped and been recorded;
            # closing first would terminate the children and leave their trials running.
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            raise

    def _best_per_family(self, prepared: PreparedRef, results: list) -> list:
        self._trials = sum(result.trials for _, result in results)
        found, failures = [], []
        for study, result in results:
            if result.best is None or result.stopped_by == "failures":
                failures.append(f"{study.family.value}: {_tuning_failure(result)}")
                continue
            best = result.best
            cv = CVScore(
                metric=prepared.metric,
                scores=best.fold_scores,
                mean=float(best.score),
                std=_std(best.fold_scores),
                best_iterations=best.best_iterations,
                duration_seconds=best.duration_seconds,
                oof_uri=best.oof_uri,
            )
            found.append((study.family, {**study.fixed, **best.params}, cv))
        # One family: its failure is the job's. An ensemble goes on without a family that failed.
        if not found or (len(results) == 1 and failures):
            raise ApplicationError("; ".join(failures), type="TuningFailed", non_retryable=True)
        return found

    def _tuning_deadline(self, req):
        """The trials' own budget, cut so the whole job still fits its deadline (final fit included)."""
        tuning = timedelta(seconds=req.hyperparameter_config.timeout_seconds)
        job_end = self._started + timedelta(seconds=parse_duration(req.job_timeout).total_seconds())
        reserve = min(timedelta(minutes=15), (job_end - workflow.now()) * 0.2)
        return min(workflow.now() + tuning, job_end - reserve)

    async def _record_while(self, task: asyncio.Task) -> None:
        """Keep the job row current from the child's progress signals, at most every few seconds."""
        while not task.done():
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: task.done() or self._dirty, timeout=5)
            if self._leaders is not None:  # also on a quiet 5 s: a rung is due by time, not by a signal
                await self._leaders.follow(workflow.now(), self._tuning_by_family)
            if self._dirty:
                self._dirty = False
                await self._record()

    @workflow.signal(name=TUNING_PROGRESS_SIGNAL)
    def tuning_progress(self, progress: TuningProgress) -> None:
        self._tuning_by_family[progress.family.value] = progress
        every = list(self._tuning_by_family.values())
        done = sum(p.completed + p.pruned + p.failed for p in every)
        total = sum(p.total for p in every)
        start, end = STAGES["tuning"], STAGES["training"]
        self._progress = start + (end - start) * min(done / max(total, 1), 1.0)
        etas = [p.eta for p in every if p.eta is not None]
        self._tuning_eta = max(etas) if etas else None
        self._tuning = progress
        workflow.set_current_details(f"RUNNING: tuning {done}/{total} trials over {len(every)} families")
        self._dirty = True

    def _validate(self, inp: TrainingWorkflowInput) -> None:
        # The API checks this too; a job started straight from the temporal CLI must fail just as clearly.
        req = inp.request
        if req.model_type not in SUPPORTED_MODEL_TYPES:
            raise ApplicationError(
                f"model_type: {req.model_type.value} is not supported yet",
                type="UnsupportedError",
                non_retryable=True,
            )
        if req.training_mode not in SUPPORTED_TRAINING_MODES:
            raise ApplicationError(
                f"training_mode: {req.training_mode.value} is not supported yet",
                type="UnsupportedError",
                non_retryable=True,
            )

    # -- helpers -------------------------------------------------------------------------------
    async def _enter(self, stage: str, *, status: TrainingStatus | None = None) -> None:
        first = self._status is TrainingStatus.QUEUED
        self._stage, self._progress = stage, float(STAGES[stage])
        if status is not None:
            self._status = status
        if first:
            await self._set_search_status()
        workflow.set_current_details(f"{self._status.value}: {stage} ({self._progress:.0f}%)")
        await self._record()

    async def _record(self) -> None:
        await io(
            contract.Jobs.record_job_status,
            self.progress(),
            timeout=timedelta(seconds=30),
        )

    async def _finish(self, status: TrainingStatus, stage: str, *, error: str | None = None) -> None:
        self._status, self._stage, self._error = status, stage, error
        workflow.set_current_details(f"{status.value}: {error or stage}")
        await self._set_search_status()
        await self._record()

    async def _fail(self, exc: Exception) -> TrainingOutcome:
        reason = _reason(exc)
        await self._close_mlflow_run("FAILED")
        await self._finish(TrainingStatus.FAILED, self._stage, error=reason)
        # Fail the execution too, so the Temporal UI and `temporal workflow list` show it as Failed.
        raise ApplicationError(reason, type="TrainingFailed", non_retryable=True) from exc

    async def _set_search_status(self) -> None:
        workflow.upsert_search_attributes([STATUS_KEY.value_set(self._status.value)])

    def _eta(self):
        if self._started is None or self._status.is_terminal or self._progress <= 0:
            return None
        if self._stage == "tuning" and self._tuning_eta is not None and self._tuning is not None:
            # After the trials: one more fit of about a trial's length per fold, then registration.
            per_fit = (self._tuning.mean_trial_seconds or 0) / max(self._folds, 1)
            return self._tuning_eta + timedelta(seconds=per_fit * 1.5 + 10)
        elapsed = workflow.now() - self._started
        return workflow.now() + elapsed * ((100.0 - self._progress) / self._progress)

    def _outcome(self) -> TrainingOutcome:
        return TrainingOutcome(
            job_id=self._job_id, status=self._status, model_id=self._model_id, error=self._error
        )


class _Leaders:
    """Successive halving across the families of an ENSEMBLE search: at each rung, once every family still
    searching has finished a trial, the trailing half is stopped (their finished trials still compete in the
    ensemble) and the leaders widen into the freed slots. Deterministic: it reads only the children's progress
    signals and workflow time."""

    def __init__(
        self, children_ids: dict[str, str], parallel: int, slots: int, start, deadline, higher_is_better: bool
    ) -> None:
        self.ids, self.parallel, self.slots = children_ids, dict.fromkeys(children_ids, parallel), slots
        self.start, self.deadline, self.higher = start, deadline, higher_is_better
        self.children: dict[str, asyncio.Task] = {}
        self.stopped: dict[str, dict] = {}
        self.rung = 0

    def _active(self) -> list[str]:
        return [
            f
            for f in self.ids
            if f not in self.stopped and not (f in self.children and self.children[f].done())
        ]

    def trailing(self, now, progress: dict) -> list[str]:
        if self.rung >= len(RUNGS) or now < self.start + (self.deadline - self.start) * RUNGS[self.rung]:
            return []
        active = self._active()
        if any(progress.get(f) is None or progress[f].best_score is None for f in active):
            return []  # every family finishes a trial before it is judged
        self.rung += 1
        keep = max(MIN_LEADERS, math.ceil(len(active) / 2))
        if len(active) <= keep:
            return []
        ranked = sorted(
            active, key=lambda f: -progress[f].best_score if self.higher else progress[f].best_score
        )
        leader = progress[ranked[0]].best_score
        for family in ranked[keep:]:
            self.stopped[family] = {
                "stopped_at_seconds": round((now - self.start).total_seconds(), 1),
                "rung": self.rung,
                "reason": f"best CV score {progress[family].best_score:.6g} trailed the leader's {leader:.6g} "
                f"at {RUNGS[self.rung - 1]:.0%} of the tuning time",
            }
        return ranked[keep:]

    async def follow(self, now, progress: dict) -> None:
        """Stop the trailing families, widen the rest (signals: fire, and never fail the job over one)."""
        trailing = self.trailing(now, progress)
        if not trailing:
            return
        signals = [
            workflow.get_external_workflow_handle(self.ids[f]).signal(TuningWorkflow.stop_search)
            for f in trailing
        ]
        remaining = self._active()
        wider = max(1, self.slots // max(len(remaining), 1))
        for family in remaining:
            if wider > self.parallel[family]:
                self.parallel[family] = wider
                signals.append(
                    workflow.get_external_workflow_handle(self.ids[family]).signal(
                        TuningWorkflow.widen, wider
                    )
                )
        for outcome in await asyncio.gather(*signals, return_exceptions=True):
            if isinstance(outcome, BaseException):
                workflow.logger.info("signal to a tuning child failed: %s", outcome)

    def allocation(self, results: list) -> dict[str, dict]:
        """Per family: the trials it ran, its best CV score, and when and why it stopped."""
        out = {}
        for study, result in results:
            family = study.family.value
            out[family] = {
                "trials": result.trials,
                "completed": result.completed,
                "pruned": result.pruned,
                "best_score": result.best.score if result.best else None,
                "stopped_by": result.stopped_by,
                "final_slots": self.parallel[family],
                **self.stopped.get(family, {}),
            }
        return out


def _std(values: list[float]) -> float:
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def _tuning_failure(result: TuningResult) -> str:
    if result.stopped_by == "failures":
        return (
            f"{result.failed} of {result.trials} trials failed, more than the allowed share; "
            f"first error: {result.error}"
        )
    if result.stopped_by == "timeout":
        if result.cancelled:
            return (
                f"no trial finished within optimization_timeout: {result.cancelled} were still running when "
                "the budget ran out, so one trial of this family on this data takes longer than the whole "
                "budget; raise optimization_timeout, or set optimization_method to none to train once "
                "with the default parameters"
            )
        return f"no trial finished within optimization_timeout ({result.trials} finished); give it more time"
    return f"no trial completed ({result.failed} failed, {result.pruned} pruned); first error: {result.error}"


def _reason(exc: BaseException) -> str:
    """The innermost readable message: an activity's ApplicationError, not the wrapper around it."""
    messages = []
    while exc is not None:
        message = getattr(exc, "message", None) or str(exc)
        if message:
            messages.append(message)
        exc = exc.__cause__
    for message in reversed(messages):
        if message and not message.startswith(("Activity task failed", "activity error")):
            return message
    return messages[-1] if messages else "unknown error"


def _headline(artifact: ModelArtifact) -> str:
    perf = artifact.performance_metrics
    value = perf.test.get(perf.primary_metric)
    return f"test {perf.primary_metric}={value:.4f}" if value is not None else "registered"

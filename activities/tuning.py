"""Tuning activities: the study (ask, record) on the training queue; the trial itself on the trials queue."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import numpy as np
import optuna
from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.errors import input_errors
from activities.workspace import Workspace, heartbeat
from pmls.contracts import activities as contract
from pmls.contracts.tuning import (
    CollectInput,
    CreateStudyInput,
    EndRunInput,
    LogTrialsInput,
    StartRunInput,
    StudySpec,
    TrialBatch,
    TrialBatchInput,
    TrialInput,
    TrialResult,
    study_name,
)
from pmls.ml.fitting import FitOptions, cross_validate
from pmls.ml.search import merge_space, portfolio
from pmls.storage.registry import ModelRegistry
from pmls.storage.studies import StudyStore
from pmls.storage.trial_rows import TrialRows


def _past(deadline: datetime) -> bool:
    return datetime.now(UTC) >= deadline


class StudyUnavailable(RuntimeError):
    """The study storage failed mid-trial: retry the activity, do not blame the parameters."""


class TrialActivities(contract.Trials):
    def __init__(self, workspace: Workspace, studies: StudyStore, rows: TrialRows) -> None:
        self.ws = workspace
        self.studies = studies
        self.rows = rows

    @activity.defn
    def run_trials(self, inp: TrialBatchInput) -> TrialBatch:
        """Run trials back to back in this slot: ask, cross-validate (each fold reported to the pruner),
        tell, write the trial's row. A short trial costs no Temporal round trip of its own, so the slot stays
        busy. A failed trial ends the batch, so that the job's failure policy sees each failure as it happens.
        Retried, the batch asks with the same keys, takes back each trial it told (writing its row again, in
        case the first attempt died in between) and re-runs only the unfinished one."""
        started, batch = time.monotonic(), TrialBatch()
        for i in range(inp.max_trials):
            if i and (time.monotonic() - started >= inp.batch_seconds or _past(inp.deadline)):
                break
            asked = self.studies.ask(inp.study, n=1, key=f"{inp.batch}/{i}")
            if not asked:
                batch.exhausted = True
                break
            spec = asked[0]
            result = self.studies.finished(spec.trial_id) if spec.claimed else None
            if result is None:
                activity.heartbeat(f"trial {spec.number}")
                result = self._evaluate(
                    TrialInput(
                        job_id=inp.job_id,
                        study=inp.study,
                        trial=spec,
                        prepared=inp.prepared,
                        dataset_config=inp.dataset_config,
                        seed=inp.seed + spec.number,
                    )
                )
                self.studies.tell(inp.study, spec.trial_id, result)
            self.rows.write(inp.job_id, inp.study.family, [result])
            batch.results.append(result)
            if result.state == "FAILED":
                break  # the workflow decides whether too many trials fail, after each failure
        return batch

    def _evaluate(self, inp: TrialInput) -> TrialResult:
        spec, trial = inp.study, inp.trial
        params = {**spec.fixed, **trial.params}
        base = {"number": trial.number, "trial_id": trial.trial_id, "params": trial.params}
        folds: list[float] = []
        started = time.monotonic()

        def on_fold(index: int, value: float) -> None:
            folds.append(value)
            if spec.pruner == "none":
                return  # nothing would read the intermediate value: save the storage round trip
            try:
                prune = self.studies.report(spec, trial.trial_id, float(np.mean(folds)), index)
            except Exception as exc:  # noqa: BLE001
                raise StudyUnavailable(str(exc)) from exc
            if prune and index < spec.folds - 1:
                raise optuna.TrialPruned()

        prepared = self.ws.prepared(inp.prepared.uri)
        opts = FitOptions.from_config(
            inp.dataset_config, spec.family, params, seed=inp.seed, num_threads=self.ws.threads
        )
        try:
            cv = cross_validate(prepared, opts, callbacks=[heartbeat], on_fold=on_fold)
        except optuna.TrialPruned:
            return TrialResult(
                **base,
                state="PRUNED",
                score=float(np.mean(folds)),
                fold_scores=folds,
                duration_seconds=time.monotonic() - started,
            )
        except (CancelledError, StudyUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - a bad configuration fails its trial, not the job
            return TrialResult(
                **base,
                state="FAILED",
                error=f"{type(exc).__name__}: {exc}"[:2000],
                fold_scores=folds,
                duration_seconds=time.monotonic() - started,
            )
        oof_uri = self.ws.save_oof(inp.job_id, f"{spec.family.value.lower()}-trial-{trial.number}", cv.oof)
        return TrialResult(
            **base,
            state="COMPLETE",
            score=cv.mean,
            fold_scores=cv.scores,
            best_iterations=cv.best_iterations,
            duration_seconds=time.monotonic() - started,
            oof_uri=oof_uri,
        )


class StudyActivities(contract.Studies):
    def __init__(self, studies: StudyStore, rows: TrialRows, registry: ModelRegistry) -> None:
        self.studies = studies
        self.rows = rows
        self.registry = registry

    @activity.defn
    async def create_study(self, inp: CreateStudyInput) -> StudySpec:
        """Plan the search (space, sampler, pruner, portfolio), create the study once, enqueue the portfolio."""
        with input_errors():
            spec = study_spec(inp)
        await asyncio.to_thread(self.studies.create, spec)
        return spec

    @activity.defn
    async def start_mlflow_run(self, inp: StartRunInput) -> str:
        """The job's parent MLflow run, before the trials nest under it (idempotent)."""
        return await asyncio.to_thread(
            self.registry.start_run, job_id=inp.job_id, request=inp.request, seed=inp.seed
        )

    @activity.defn
    async def end_mlflow_run(self, inp: EndRunInput) -> None:
        """Close the job's MLflow run as FAILED or KILLED when the job failed or was cancelled."""
        await asyncio.to_thread(self.registry.end_run, inp.mlflow_run_id, inp.status)

    @activity.defn
    async def collect_trials(self, inp: CollectInput) -> list[TrialResult]:
        """The trials of a batch that was cancelled or failed for good: kept if told, settled if not; their
        rows written here (the batch may have died before writing them)."""

        def settle() -> list[TrialResult]:
            results = self.studies.collect(inp.study, inp.batch, state=inp.state, error=inp.error)
            self.rows.write(inp.job_id, inp.study.family, results)
            return results

        return await asyncio.to_thread(settle)

    @activity.defn
    async def log_trials(self, inp: LogTrialsInput) -> None:
        """One nested MLflow run per told trial under the job's run (parameters, CV score per fold), for
        the trials that have none yet: read from the study, so nothing travels through workflow history."""

        def log() -> None:
            results = self.studies.results(inp.study)
            self.registry.log_trials(inp.mlflow_run_id, inp.study.family.value, results)

        await asyncio.to_thread(log)


def study_spec(inp: CreateStudyInput) -> StudySpec:
    hp, prepared = inp.hyperparameter_config, inp.prepared
    space, fixed = merge_space(inp.family, hp.search_space)
    return StudySpec(
        study=study_name(inp.job_id, inp.family),
        family=inp.family,
        direction="maximize" if prepared.higher_is_better else "minimize",
        method=hp.optimization_method,
        pruner=hp.pruner,
        folds=max(prepared.cv_folds, 1),
        seed=inp.seed,
        space=space,
        fixed=fixed,
        portfolio=portfolio(inp.family, space) if hp.portfolio else [],
        limit=hp.optimization_trials,
    )

"""Contracts of the tuning child workflow and its activities (stdlib + pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from pmls.contracts.enums import ModelType
from pmls.contracts.models import DatasetConfig, HyperparameterConfig, ParameterRange, TrainingRequest
from pmls.contracts.workflow import PreparedRef

TrialState = Literal["COMPLETE", "PRUNED", "FAILED", "CANCELLED"]


def study_name(job_id: str, family: ModelType) -> str:
    return f"{job_id}/{family.value.lower()}"


def trial_key(job_id: str, family: ModelType, number: int) -> str:
    return f"{study_name(job_id, family)}/trial-{number}"


class StudySpec(BaseModel):
    study: str
    family: ModelType
    direction: Literal["maximize", "minimize"]
    method: str
    pruner: str
    folds: int
    seed: int
    space: dict[str, ParameterRange]
    fixed: dict[str, Any] = Field(default_factory=dict)
    portfolio: list[dict[str, Any]] = Field(default_factory=list)
    limit: int


class CreateStudyInput(BaseModel):
    job_id: str
    family: ModelType
    hyperparameter_config: HyperparameterConfig
    prepared: PreparedRef
    seed: int


class StartRunInput(BaseModel):
    job_id: str
    request: TrainingRequest
    seed: int | None = None  # the job's seed (drawn when the request has no random_seed), kept as a tag


class EndRunInput(BaseModel):
    mlflow_run_id: str
    status: Literal["FAILED", "KILLED"]  # MLflow's run statuses for a failed and a cancelled job


class TrialSpec(BaseModel):
    number: int
    trial_id: int
    params: dict[str, Any]
    claimed: bool = False  # asked before under the same key (a retry): it may have been told already


class TrialInput(BaseModel):
    job_id: str
    study: StudySpec
    trial: TrialSpec
    prepared: PreparedRef
    dataset_config: DatasetConfig
    seed: int


class TrialBatchInput(BaseModel):
    """One slot's run of trials in one activity: ask, cross-validate, tell, until ``batch_seconds`` have
    passed (a long trial is a batch of one), ``max_trials`` are done, the deadline is near or the study's
    budget is used up. Its trials are keyed ``{batch}/{i}``, so a retried batch repeats none of them."""

    job_id: str
    study: StudySpec
    batch: str
    prepared: PreparedRef
    dataset_config: DatasetConfig
    seed: int
    max_trials: int
    batch_seconds: float
    deadline: datetime


class CollectInput(BaseModel):
    """A batch that ended without returning (cancelled, or failed for good): settle its trials."""

    job_id: str
    study: StudySpec
    batch: str
    state: Literal["CANCELLED", "FAILED"]
    error: str


class TrialResult(BaseModel):
    number: int
    trial_id: int | None = None
    state: TrialState
    params: dict[str, Any]
    score: float | None = None
    fold_scores: list[float] = Field(default_factory=list)
    best_iterations: list[int] = Field(default_factory=list)
    duration_seconds: float = 0.0
    error: str | None = None
    oof_uri: str | None = None  # out-of-fold scores of a complete trial, for ensembles


class TrialBatch(BaseModel):
    results: list[TrialResult] = Field(default_factory=list)
    exhausted: bool = False  # the study had no room for another trial


class LogTrialsInput(BaseModel):
    """Log the study's told trials that have no nested MLflow run yet (read from the study, not carried)."""

    mlflow_run_id: str
    study: StudySpec


class TuningState(BaseModel):
    """What survives continue-as-new: counts and the best trial, never the whole trial list."""

    completed: int = 0
    pruned: int = 0
    failed: int = 0
    cancelled: int = 0
    trial_seconds: float = 0.0
    batches: int = 0
    best: TrialResult | None = None
    first_error: str | None = None

    @property
    def finished(self) -> int:
        return self.completed + self.pruned + self.failed


# Finished trials per TuningWorkflow run before it continues as new (its history stays bounded).
TRIALS_PER_RUN = 250


class TuningInput(BaseModel):
    job_id: str
    parent_id: str
    mlflow_run_id: str | None = None
    study: StudySpec
    prepared: PreparedRef
    dataset_config: DatasetConfig
    hyperparameter_config: HyperparameterConfig
    seed: int
    parallel: int
    deadline: datetime
    state: TuningState | None = None
    trials_per_run: int = Field(TRIALS_PER_RUN, ge=1)


class TuningProgress(BaseModel):
    family: ModelType
    completed: int
    pruned: int
    failed: int
    running: int
    total: int
    best_score: float | None = None
    mean_trial_seconds: float | None = None
    eta: datetime | None = None


class TuningResult(BaseModel):
    family: ModelType
    best: TrialResult | None = None
    trials: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    cancelled: int = 0  # stopped by the budget (or a cancel) before they finished
    # "outpaced": an ENSEMBLE job stopped this family to give its time to the families that lead
    stopped_by: Literal["trials", "timeout", "failures", "exhausted", "outpaced"] = "trials"
    error: str | None = None
    # Trials finished since the search last logged nested MLflow runs: the parent logs them beside the final
    # fit rather than keep the search open for them (each costs MLflow server time).
    unlogged: int = 0

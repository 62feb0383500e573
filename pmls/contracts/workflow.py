"""Inputs and outputs of the workflows and activities: one pydantic model per call, references not data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from pmls.contracts.enums import ModelType, Task, TrainingStatus
from pmls.contracts.models import (
    DatasetConfig,
    DeploymentResult,
    ModelArtifact,
    TrainingMetrics,
    TrainingRequest,
    ValidationConfig,
)


class TrainingWorkflowInput(BaseModel):
    job_id: str
    request: TrainingRequest


class DatasetRef(BaseModel):
    """A data set on the artifact store: where, what exactly (content hash) and how big."""

    uri: str
    content_hash: str
    rows: int
    columns: list[str]


class SplitRef(BaseModel):
    train: DatasetRef
    validation: DatasetRef
    test: DatasetRef
    task: Task
    classes: list[Any] | None = None
    description: str = ""


class LoadDatasetInput(BaseModel):
    job_id: str
    dataset_config: DatasetConfig


class SplitDatasetInput(BaseModel):
    job_id: str
    dataset: DatasetRef
    dataset_config: DatasetConfig
    seed: int


class PrepareInput(BaseModel):
    job_id: str
    splits: SplitRef
    dataset_config: DatasetConfig
    validation_config: ValidationConfig
    seed: int


class PreparedRef(BaseModel):
    """Preprocessed matrices, the CV plan and the feature selection of one job, on the artifact store."""

    uri: str
    task: Task
    metric: str
    higher_is_better: bool
    features: list[str]
    dropped_features: dict[str, str] = Field(default_factory=dict)
    cv_strategy: str
    cv_folds: int
    cv_description: str = ""
    rows: dict[str, int] = Field(default_factory=dict)


class CrossValidateInput(BaseModel):
    job_id: str
    prepared: PreparedRef
    dataset_config: DatasetConfig
    model_type: ModelType
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int


class CVScore(BaseModel):
    metric: str
    scores: list[float]
    mean: float
    std: float
    best_iterations: list[int] = Field(default_factory=list)
    duration_seconds: float
    oof_uri: str | None = None


class FitFinalInput(BaseModel):
    job_id: str
    prepared: PreparedRef
    dataset_config: DatasetConfig
    model_type: ModelType
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int
    cv: CVScore | None = None
    refit_full: bool = True


class TrainedModelRef(BaseModel):
    bundle_uri: str
    task: Task
    classes: list[Any] | None = None
    primary_metric: str
    metrics: TrainingMetrics
    best_iteration: int
    params: dict[str, Any] = Field(default_factory=dict)
    model_size_mb: float
    latency_ms_per_row: float | None = None
    duration_seconds: float
    model_type: ModelType | None = None
    cv: CVScore | None = None
    features: list[str] = Field(default_factory=list)
    # Periods the delivered model was fitted on, and those of the model the test metrics come from.
    fitted_on: list[str] = Field(default_factory=lambda: ["train", "validation"])
    evaluated_with: list[str] = Field(default_factory=lambda: ["train", "validation"])
    test_scores_uri: str | None = None  # .npy of the test predictions the test metrics come from
    dropped_features: dict[str, str] = Field(default_factory=dict)
    ensemble: dict[str, Any] | None = None  # method, weights, members and every candidate's scores


class EnsembleCandidate(BaseModel):
    model_type: ModelType
    params: dict[str, Any] = Field(default_factory=dict)
    cv: CVScore


class BuildEnsembleInput(BaseModel):
    job_id: str
    prepared: PreparedRef
    dataset_config: DatasetConfig
    candidates: list[EnsembleCandidate]
    seed: int
    bag_folds: int = 0
    refit_full: bool = True


class CompareChampionInput(BaseModel):
    job_id: str
    request: TrainingRequest
    splits: SplitRef
    prepared: PreparedRef
    trained: TrainedModelRef


class ChampionComparison(BaseModel):
    """The new model against the lineage's champion, on the same test period and metric."""

    metric: str
    new_score: float | None = None
    champion_model_id: str | None = None
    champion_version: str | None = None
    champion_score: float | None = None
    performance_improvement: float | None = None  # sign-aware: positive = the new model is better
    first_version: bool = False
    note: str = ""


class RegisterModelInput(BaseModel):
    job_id: str
    request: TrainingRequest
    splits: SplitRef
    trained: TrainedModelRef
    comparison: ChampionComparison | None = None


class RegisteredModel(BaseModel):
    model_id: str
    model_name: str
    version: str
    model_uri: str
    run_id: str
    bundle_sha256: str | None = (
        None  # recorded in PostgreSQL; the service loads this version only if it matches
    )


class CompleteJobInput(BaseModel):
    job_id: str
    request: TrainingRequest
    trained: TrainedModelRef
    registered: RegisteredModel
    started_at: datetime
    finished_at: datetime
    hyperparameter_trials: int = 0
    comparison: ChampionComparison | None = None
    run_id: str | None = None  # the run that completes the job (see Progress)


class TurnInput(BaseModel):
    """Wait until fewer than ``limit`` jobs run and this one is next in the queue, then mark it RUNNING."""

    job_id: str
    limit: int


class Progress(BaseModel):
    """A job's live state: what the ``progress`` query answers and what ``record_job_status`` writes."""

    job_id: str
    status: TrainingStatus
    stage: str
    progress_percentage: float
    metrics: TrainingMetrics | None = None
    started_at: datetime | None = None
    estimated_completion: datetime | None = None
    model_id: str | None = None
    error: str | None = None
    run_id: str | None = None  # the workflow run that reports it, and when (workflow time): a reset's new run
    at: datetime | None = None  # takes the job row over, the old run's late writes are ignored


class TrainingOutcome(BaseModel):
    job_id: str
    status: TrainingStatus
    model_id: str | None = None
    artifact: ModelArtifact | None = None
    error: str | None = None
    deployment: DeploymentResult | None = None  # the deploy stage's answer (deployment_config.auto_deploy)

"""The seed's structs as pydantic v2 models (field names verbatim), plus the extensions DESIGN.md names.

Stdlib + pydantic only: workflows import this module inside the sandbox.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pmls.contracts.durations import parse_duration
from pmls.contracts.enums import ModelType, Task, TrainingMode, TrainingStatus
from pmls.contracts.periods import parse_period

# Ids and names are short enough that every key derived from them fits its 100-character column whole: a trial
# key is `{job}/{family}/trial-{n}` (27 characters past the job id), a model id `{name}_{family}_v{version}`.
MAX_ID = 64
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_ID - 1}}}$"
NAME_PATTERN = rf"^[A-Za-z][A-Za-z0-9_.\-]{{0,{MAX_ID - 1}}}$"
OPTIMIZATION_METHODS = ("tpe", "random", "cmaes", "gp", "qmc", "grid", "none")
MAX_DURATION = timedelta(days=7)  # a job, its search, a gap: past a week it is a typo, not a plan
MAX_COLUMN = 256
MAX_SOURCE = 4096

# Upper bounds of the parameters that size a model or its training (trees, rounds, leaves, depth, units,
# layers, epochs, bins, batch): a search over larger values exhausts a worker instead of finding a model.
PARAMETER_LIMITS: dict[str, float] = {
    "n_estimators": 10_000,
    "num_boost_round": 20_000,
    "early_stopping_rounds": 1_000,
    "num_leaves": 131_072,
    "max_leaves": 131_072,
    "max_leaf_nodes": 1_000_000,
    "max_depth": 64,
    "max_bin": 65_535,
    "hidden_size": 4_096,
    "num_layers": 16,
    "max_epochs": 1_000,
    "batch_size": 65_536,
}

Column = Annotated[str, Field(min_length=1, max_length=MAX_COLUMN)]
Choice = str | bool | int | float | None


class Contract(BaseModel):
    """Base for request-side contracts: unknown fields are an error, not silently dropped; no NaN or infinity;
    no text that PostgreSQL cannot store (a NUL) or that is not Unicode (a lone surrogate)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _clean_text(cls, value: Any) -> Any:
        _check_text(value)
        return value


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode (a lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_text(item)


def bounded_duration(value: str, what: str, *, minimum: timedelta = timedelta(0)) -> str:
    """A duration string within ``minimum`` .. MAX_DURATION (a ValueError naming the bound otherwise)."""
    length = parse_duration(value)
    if length > MAX_DURATION:
        raise ValueError(f"{what} is at most {MAX_DURATION.days} days (P{MAX_DURATION.days}D)")
    if length < minimum:
        raise ValueError(f"{what} must be at least {minimum}")
    return value


class ParameterRange(Contract):
    type: Literal["int", "float", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Choice] | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _bounds(self) -> ParameterRange:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical range needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} range needs both 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"'low' ({self.low}) is greater than 'high' ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs 'low' > 0")
        return self


class DatasetConfig(Contract):
    # seed fields
    training_period: str | None = Field(None, description="ISO-8601 interval over timestamp_column")
    validation_period: str | None = None
    test_period: str | None = None
    feature_selection: bool = False
    data_augmentation: bool = False
    class_balancing: bool = False
    # ours
    source: str = Field(
        ...,
        min_length=1,
        max_length=MAX_SOURCE,
        description=(
            "Parquet/CSV/NDJSON file, glob or folder under a data root; `duckdb:SELECT ...` over such files; "
            "or `connection:NAME?table=T` / `connection:NAME?query=SELECT ...` for a database the operator named"
        ),
    )
    target: Column = Field(..., description="column to predict")
    timestamp_column: Column | None = None
    entity_column: Column | None = None
    task: Task | None = Field(None, description="binary, multiclass or regression; inferred when absent")
    features: list[Column] | None = Field(
        None, max_length=10_000, description="columns to use; default: all but target"
    )
    sequence_length: int = Field(10, ge=2, le=512, description="LSTM: time steps per entity sequence")
    gap: str | None = Field(None, description="time left out between training and validation data, e.g. P7D")
    balancing_method: Literal["class_weight", "oversample"] = "class_weight"
    augmentation_method: Literal["auto", "jitter", "mixup"] = "auto"

    @field_validator("gap")
    @classmethod
    def _gap(cls, value: str | None) -> str | None:
        return value if value is None else bounded_duration(value, "the gap")

    @field_validator("training_period", "validation_period", "test_period")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        if value is not None:
            parse_period(value)
        return value

    @model_validator(mode="after")
    def _periods_fit_together(self) -> DatasetConfig:
        names = ("training_period", "validation_period", "test_period")
        given = [n for n in names if getattr(self, n)]
        if given and not self.timestamp_column:
            raise ValueError(f"{given[0]} needs a timestamp_column to split on")
        if given and len(given) != 3:
            missing = [n for n in names if n not in given]
            raise ValueError(f"give all three periods or none; missing: {', '.join(missing)}")
        if given:
            train, valid, test = (parse_period(getattr(self, n)) for n in names)
            if train.overlaps(valid) or train.overlaps(test) or valid.overlaps(test):
                raise ValueError("training_period, validation_period and test_period must not overlap")
            if not (train.start < valid.start and valid.start < test.start):
                raise ValueError(
                    "periods must run forward in time: training, then validation, then test "
                    "(validating on the past leaks the future)"
                )
        return self


class HyperparameterConfig(Contract):
    optimization_method: str = "tpe"
    search_space: dict[Annotated[str, Field(max_length=64)], ParameterRange] = Field(
        default_factory=dict, max_length=64
    )
    optimization_trials: int = Field(20, ge=0, le=100_000)
    optimization_timeout: str = "PT1H"
    # ours
    max_parallel_trials: int | None = Field(
        None, ge=1, le=256, description="default: the trial workers' slots"
    )
    pruner: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    max_failed_trial_share: float = Field(0.5, ge=0.0, le=1.0, description="more failed trials fail the job")
    portfolio: bool = Field(True, description="start from configurations known to be strong for the family")

    @property
    def tunes(self) -> bool:
        return self.optimization_method != "none" and self.optimization_trials > 0

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.optimization_timeout).total_seconds()

    @field_validator("optimization_method")
    @classmethod
    def _method(cls, value: str) -> str:
        value = value.lower()
        if value not in OPTIMIZATION_METHODS:
            raise ValueError(f"unknown method {value!r}; choose one of {', '.join(OPTIMIZATION_METHODS)}")
        return value

    @field_validator("optimization_timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("the timeout must be positive")
        return bounded_duration(value, "the search's timeout")

    @field_validator("search_space")
    @classmethod
    def _within_limits(cls, space: dict[str, ParameterRange]) -> dict[str, ParameterRange]:
        for name, rng in space.items():
            limit = PARAMETER_LIMITS.get(name)
            if limit is None:
                continue
            values = [v for v in (rng.choices or []) if isinstance(v, int | float)] + [rng.low, rng.high]
            if any(v is not None and v > limit for v in values):
                raise ValueError(f"{name} is at most {limit:g}")
        return space


class ValidationConfig(Contract):
    metric: str | None = Field(None, description="primary metric; default: roc_auc / log_loss / rmse by task")
    cv_strategy: Literal["auto", "timeseries", "stratified", "kfold", "group", "none"] = "auto"
    cv_folds: int = Field(5, ge=2, le=20)
    bag_folds: int = Field(
        0,
        ge=0,
        le=10,
        description="ENSEMBLE: refit each chosen member as a bag of k models, each early-stopped on the fold "
        "of the rows it is fitted on that it leaves out, predictions averaged (0: one refit per member)",
    )
    refit_full: bool = Field(
        True,
        description="deliver a model refit on every row the request provides (training + validation + test "
        "periods); the test metrics stay those of the model fitted on training + validation, which "
        "never saw the test period. false: deliver that model",
    )

    @field_validator("bag_folds")
    @classmethod
    def _bag_folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("a bag of one model is no bag: use 0 (off) or 2 to 10 folds")
        return value


class DeploymentConfig(Contract):
    """How a version is promoted: on a job, whether its deploy stage asks at all (``auto_deploy``); on a manual
    deploy, the gates it must pass. A gate left unset is not checked."""

    auto_deploy: bool = False
    min_improvement: float = Field(
        0.0, ge=-1e6, le=1e6, description="least improvement of the primary metric over the champion"
    )
    min_primary_metric: float | None = Field(
        None,
        ge=-1e12,
        le=1e12,
        description="the test primary metric must reach this (at most this, for errors)",
    )
    max_latency_ms_per_row: float | None = Field(
        None, gt=0, le=1e6, description="most milliseconds per predicted row, as measured after training"
    )
    max_model_size_mb: float | None = Field(None, gt=0, le=1e6, description="largest model bundle")
    target: Literal["registry", "local", "kubernetes"] = "registry"
    alias: str = Field("production", pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
    replicas: int = Field(1, ge=1, le=100, description="target `kubernetes`: serving pods")
    namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="target `kubernetes` (default: settings)",
    )
    force: bool = Field(False, description="promote although a gate fails; recorded as forced")
    reason: str | None = Field(None, max_length=500, description="why, for the deployment history")


class TrainingRequest(Contract):
    training_id: str | None = Field(None, pattern=ID_PATTERN, description="job id; generated when absent")
    model_type: ModelType
    training_mode: TrainingMode = TrainingMode.FULL_RETRAIN
    dataset_config: DatasetConfig
    hyperparameter_config: HyperparameterConfig = Field(default_factory=HyperparameterConfig)
    validation_config: ValidationConfig = Field(default_factory=ValidationConfig)
    deployment_config: DeploymentConfig = Field(default_factory=DeploymentConfig)
    model_name: str | None = Field(
        None, pattern=NAME_PATTERN, description="lineage; default: the target's name"
    )
    job_timeout: str = Field("PT4H", description="the whole job's deadline; tuning stops in time to finish")
    random_seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="seeds splits, CV folds, samplers and every fit: the same request on the same data "
        "evaluates the same configurations; default: a seed drawn per job (recorded in MLflow)",
    )

    @field_validator("job_timeout")
    @classmethod
    def _job_timeout(cls, value: str) -> str:
        return bounded_duration(value, "job_timeout", minimum=timedelta(minutes=1))

    @model_validator(mode="after")
    def _lstm_needs_time(self) -> TrainingRequest:
        if self.model_type is ModelType.LSTM and not self.dataset_config.timestamp_column:
            raise ValueError(
                "an LSTM learns from sequences ordered in time: set dataset_config.timestamp_column "
                "(and entity_column when the rows belong to several series)"
            )
        return self

    @property
    def lineage(self) -> str:
        """The model name; by default the target's, made safe and, when long, shortened with a digest so
        that two long targets never share a lineage."""
        if self.model_name:
            return self.model_name
        target = self.dataset_config.target
        name = re.sub(r"[^A-Za-z0-9_.\-]", "_", target)
        if len(name) > MAX_ID:
            name = f"{name[: MAX_ID - 9]}_{hashlib.sha256(target.encode()).hexdigest()[:8]}"
        return name


class TrainingMetrics(BaseModel):
    training_accuracy: float | None = None
    validation_accuracy: float | None = None
    training_loss: float | None = None
    validation_loss: float | None = None
    feature_importance: dict[str, float] = Field(default_factory=dict)
    cross_validation_scores: list[float] = Field(default_factory=list)
    # ours: every metric by split, e.g. {"roc_auc": 0.91, ...}
    validation_metrics: dict[str, float] = Field(default_factory=dict)
    test_metrics: dict[str, float] = Field(default_factory=dict)
    # ENSEMBLE: how the search's time went to each family (trials, best CV score, when and why it stopped)
    search_allocation: dict[str, dict[str, Any]] = Field(default_factory=dict)


class TrainingJob(BaseModel):
    job_id: str
    training_request: TrainingRequest
    status: TrainingStatus
    progress_percentage: float = 0.0
    current_stage: str = "queued"
    training_metrics: TrainingMetrics | None = None
    estimated_completion: datetime | None = None
    created_at: datetime
    # ours
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    model_id: str | None = None
    error: str | None = None
    started_by: str | None = Field(
        None, description="the API token's name or the JWT's subject that started it"
    )
    run_id: str | None = Field(
        None, description="the Temporal run the job follows (a `temporal workflow reset` starts a new one)"
    )


class QueuedJob(BaseModel):
    """A job waiting for its turn (``GET /api/v1/training/queue``), oldest first."""

    position: int = Field(description="1 runs next")
    job_id: str
    model_type: ModelType
    model_name: str
    queued_at: datetime
    started_by: str | None = None


# Metrics where a larger value is better; every other primary metric is an error (rmse, log loss, ...).
HIGHER_IS_BETTER = frozenset({"accuracy", "balanced_accuracy", "roc_auc", "f1", "r2"})


class PerformanceMetrics(BaseModel):
    primary_metric: str
    test: dict[str, float] = Field(default_factory=dict)
    validation: dict[str, float] = Field(default_factory=dict)
    cv_mean: float | None = None
    cv_std: float | None = None
    prediction_latency_ms_per_row: float | None = None
    performance_improvement: float | None = None
    champion_model_id: str | None = None
    # The periods the registered model was fitted on, and those of the model the test figures come from.
    fitted_on: list[str] = Field(default_factory=list)
    test_metrics_fitted_on: list[str] = Field(default_factory=list)


class ModelArtifact(BaseModel):
    model_id: str
    model_type: ModelType
    version: str
    training_job_id: str
    performance_metrics: PerformanceMetrics
    model_size_mb: float | None = None
    deployment_ready: bool = False
    # ours
    model_name: str
    model_uri: str
    mlflow_run_id: str | None = None
    created_at: datetime | None = None
    bundle_sha256: str | None = Field(
        None, description="content hash of the bundle, checked before loading it"
    )


class CancellationResult(BaseModel):
    job_id: str
    status: TrainingStatus
    cancelled: bool
    message: str


class GateResult(BaseModel):
    gate: str
    passed: bool
    threshold: float | bool | None = None
    value: float | bool | None = None
    detail: str = ""


class DeploymentResult(BaseModel):
    """One promotion, rejection or rollback of a lineage, as answered and as kept in its history."""

    deployment_id: str
    model_id: str
    model_name: str
    version: str
    target: str
    alias: str
    status: Literal["DEPLOYED", "REJECTED", "ROLLED_BACK", "UNCHANGED"]
    previous_model_id: str | None = None
    deployed_at: datetime
    message: str = ""
    deployed_by: str | None = None
    action: Literal["promote", "rollback"] = "promote"
    job_id: str | None = None  # the training job whose deploy stage asked
    gates: list[GateResult] = Field(default_factory=list)
    forced: bool = False
    reason: str | None = None
    smoke_test: str | None = None
    serving_version: str | None = None  # what the alias serves after this (None: unchanged, or nothing)


class TrainingCompletedData(BaseModel):
    training_job_id: str
    model_id: str
    model_type: str
    training_duration_minutes: int
    final_accuracy: float
    validation_accuracy: float
    hyperparameter_trials: int
    deployment_ready: bool
    performance_improvement: float


class TrainingCompletedEvent(BaseModel):
    event_id: str
    timestamp: datetime
    training_completed: TrainingCompletedData

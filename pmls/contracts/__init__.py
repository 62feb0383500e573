"""Contracts shared by every face: enums, structs, ids, queue names, error types (stdlib + pydantic)."""

from pmls.contracts.enums import (
    SUPPORTED_MODEL_TYPES,
    SUPPORTED_TRAINING_MODES,
    ModelType,
    Task,
    TrainingMode,
    TrainingStatus,
)
from pmls.contracts.models import (
    CancellationResult,
    DatasetConfig,
    DeploymentConfig,
    DeploymentResult,
    HyperparameterConfig,
    ModelArtifact,
    ParameterRange,
    PerformanceMetrics,
    TrainingCompletedData,
    TrainingCompletedEvent,
    TrainingJob,
    TrainingMetrics,
    TrainingRequest,
    ValidationConfig,
)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_TRAINING_MODES",
    "CancellationResult",
    "DatasetConfig",
    "DeploymentConfig",
    "DeploymentResult",
    "HyperparameterConfig",
    "ModelArtifact",
    "ModelType",
    "ParameterRange",
    "PerformanceMetrics",
    "Task",
    "TrainingCompletedData",
    "TrainingCompletedEvent",
    "TrainingJob",
    "TrainingMetrics",
    "TrainingMode",
    "TrainingRequest",
    "TrainingStatus",
    "ValidationConfig",
]

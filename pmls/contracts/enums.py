"""The seed's enumerations, kept verbatim, plus the task kinds we add."""

from enum import StrEnum


class TrainingStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (TrainingStatus.COMPLETED, TrainingStatus.FAILED, TrainingStatus.CANCELLED)


class ModelType(StrEnum):
    XGBOOST = "XGBOOST"
    LIGHTGBM = "LIGHTGBM"
    RANDOM_FOREST = "RANDOM_FOREST"
    NEURAL_NETWORK = "NEURAL_NETWORK"
    LSTM = "LSTM"
    ENSEMBLE = "ENSEMBLE"


class TrainingMode(StrEnum):
    FULL_RETRAIN = "FULL_RETRAIN"
    INCREMENTAL = "INCREMENTAL"
    TRANSFER_LEARNING = "TRANSFER_LEARNING"
    ENSEMBLE_UPDATE = "ENSEMBLE_UPDATE"


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


# Model families the engine trains today; the API answers 422 for the others.
SUPPORTED_MODEL_TYPES: frozenset[ModelType] = frozenset(ModelType)
SUPPORTED_TRAINING_MODES: frozenset[TrainingMode] = frozenset({TrainingMode.FULL_RETRAIN})

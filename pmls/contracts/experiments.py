"""A trial as the API and the cache show it (the seed's HyperparameterExperiment)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class HyperparameterExperiment(BaseModel):
    experiment_id: str
    training_job_id: str
    hyperparameters: dict[str, Any]
    performance_score: float | None
    trial_number: int
    experiment_duration_minutes: float | None = None
    model_type: str | None = None
    state: str
    created_at: datetime | None = None

"""Pure id builders shared by the API, workers and tests."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from datetime import UTC, datetime

from pmls.contracts.models import TrainingRequest

EVENT_NAMESPACE = uuid.UUID("5b0f3c1e-8a53-4f0e-9a51-7d3c2a1b9e10")


def new_job_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"training_{now:%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def request_hash(request: TrainingRequest) -> str:
    """Identity of a request body (without its id), for idempotent starts."""
    body = request.model_dump(mode="json", exclude={"training_id"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def completed_event_id(job_id: str) -> str:
    """Deterministic, so a retried activity or a reset workflow never emits a second event."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"model_training_completed:{job_id}"))


def failed_event_id(job_id: str, run_id: str | None) -> str:
    """Once per run: a reset run that fails again is a new failure."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"model_training_failed:{job_id}:{run_id}"))


def deployment_event_id(event_type: str, deployment_id: str) -> str:
    """One event per deployment outcome, whatever retries the recording."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{event_type}:{deployment_id}"))


def model_id(model_name: str, model_type: str, version: str) -> str:
    """Never truncated (two versions must not share an id): names are bounded so that it fits."""
    out = f"{model_name}_{model_type.lower()}_v{version}"
    if len(out) > 100:
        raise ValueError(f"model id {out[:40]}... is longer than 100 characters")
    return out

"""Promotion and rollback of a lineage's versions: what the lineage workflow is asked, what its gates judge, and
what its activities are given. Stdlib + pydantic only: the lineage workflow imports it inside the sandbox.

The gates are evaluated here, purely, so that the workflow's update validator (an immediate refusal that leaves
no trace in its history) and the caller (which records the refusal) reach the same verdict.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from pmls.contracts.models import (
    HIGHER_IS_BETTER,
    NAME_PATTERN,
    Contract,
    DeploymentConfig,
    DeploymentResult,
    GateResult,
    ModelArtifact,
)

DEPLOYMENT_EVENTS = ("model_deployed", "model_deployment_rejected", "model_rolled_back")
# ApplicationError types of the lineage workflow's refusals (a failed gate; a request it cannot carry out).
GATE_REJECTED = "GateRejected"
AVAILABLE_TARGETS = ("registry", "local", "kubernetes")
BAD_DEPLOYMENT = "InvalidDeployment"


def previous_alias(alias: str) -> str:
    """The alias the holder before the last promotion keeps, so that a rollback knows where to go."""
    return "previous" if alias == "production" else f"{alias}-previous"


class Candidate(BaseModel):
    """What the gates judge: a snapshot of a registered version, taken by the caller from its artifact row."""

    model_id: str
    model_name: str
    version: str
    primary_metric: str
    value: float | None = None  # the primary metric on the test period
    deployment_ready: bool = False
    performance_improvement: float | None = None
    champion_model_id: str | None = None
    latency_ms_per_row: float | None = None
    model_size_mb: float | None = None

    @classmethod
    def of(cls, artifact: ModelArtifact) -> Candidate:
        perf = artifact.performance_metrics
        return cls(
            model_id=artifact.model_id,
            model_name=artifact.model_name,
            version=artifact.version,
            primary_metric=perf.primary_metric,
            value=perf.test.get(perf.primary_metric),
            deployment_ready=artifact.deployment_ready,
            performance_improvement=perf.performance_improvement,
            champion_model_id=perf.champion_model_id,
            latency_ms_per_row=perf.prediction_latency_ms_per_row,
            model_size_mb=artifact.model_size_mb,
        )


def evaluate_gates(candidate: Candidate, config: DeploymentConfig) -> list[GateResult]:
    """Every gate the configuration asks for, passed or not, with its threshold and the version's value."""
    gates = [
        GateResult(
            gate="deployment_ready",
            passed=candidate.deployment_ready,
            threshold=True,
            value=candidate.deployment_ready,
            detail="beats a trivial baseline on its test period, and its champion by min_improvement"
            if candidate.deployment_ready
            else "not deployment_ready: it does not beat a trivial baseline on its test period, or it fell "
            "short of its champion by more than min_improvement when it was trained",
        )
    ]
    improvement = candidate.performance_improvement
    if improvement is not None:
        gates.append(
            GateResult(
                gate="min_improvement",
                passed=improvement >= config.min_improvement,
                threshold=config.min_improvement,
                value=improvement,
                detail=f"{candidate.primary_metric} improvement over champion {candidate.champion_model_id}",
            )
        )
    if config.min_primary_metric is not None:
        higher = candidate.primary_metric in HIGHER_IS_BETTER
        value = candidate.value
        ok = value is not None and (
            value >= config.min_primary_metric if higher else value <= config.min_primary_metric
        )
        gates.append(
            GateResult(
                gate="min_primary_metric",
                passed=ok,
                threshold=config.min_primary_metric,
                value=value,
                detail=f"test {candidate.primary_metric} must be {'at least' if higher else 'at most'} the threshold",
            )
        )
    for gate, limit, value, unit in (
        ("max_latency_ms_per_row", config.max_latency_ms_per_row, candidate.latency_ms_per_row, "ms per row"),
        ("max_model_size_mb", config.max_model_size_mb, candidate.model_size_mb, "MB"),
    ):
        if limit is not None:
            gates.append(
                GateResult(
                    gate=gate,
                    passed=value is not None and value <= limit,
                    threshold=limit,
                    value=value,
                    detail=f"at most {limit:g} {unit}" if value is not None else f"not measured ({unit})",
                )
            )
    return gates


def refusal(gates: list[GateResult]) -> str:
    """One line naming every failed gate, its threshold and the version's value."""
    return "; ".join(
        f"{g.gate}: {g.value!r} against {g.threshold!r} ({g.detail})" for g in gates if not g.passed
    )


class PromoteRequest(BaseModel):
    """The lineage workflow's ``promote`` update."""

    deployment_id: str
    candidate: Candidate
    config: DeploymentConfig
    requested_by: str | None = None
    job_id: str | None = None  # the training job whose deploy stage asks
    requested_at: datetime


class RollbackRequest(Contract):
    """``POST /api/v1/models/{model_name}/rollback``: back to the holder of the previous alias, or a version."""

    to_version: str | None = Field(None, pattern=r"^[0-9]{1,9}$")
    alias: str = Field("production", pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
    reason: str | None = Field(None, max_length=500)


class RollbackCommand(BaseModel):
    """The lineage workflow's ``rollback`` update."""

    deployment_id: str
    model_name: str = Field(pattern=NAME_PATTERN)
    alias: str
    to_version: str | None = None
    reason: str | None = None
    requested_by: str | None = None
    requested_at: datetime


class LineageState(BaseModel):
    """What a lineage workflow carries across continue-as-new."""

    model_name: str
    serving: dict[str, str] = Field(default_factory=dict)  # alias -> version, as this workflow last set it
    operations: int = 0


# -- activity inputs and outputs ------------------------------------------------------------------------------


class MoveAliasInput(BaseModel):
    model_name: str
    alias: str
    version: str
    # `local`: the serving process is told to load it too; `kubernetes`: the objects are applied
    target: str = "registry"
    replicas: int = 1
    namespace: str | None = None


class AliasMove(BaseModel):
    """What an alias and its ``previous`` alias pointed at before a move (None: not set), to undo it."""

    model_name: str
    alias: str
    version: str
    before: str | None = None
    before_model_id: str | None = None
    previous_before: str | None = None
    target: str = "registry"
    local_before: str | None = None  # target `local`: what the serving process was asked to serve before
    namespace: str | None = None  # target `kubernetes`: where, and the objects as they were (None: absent)
    kube_before: list[dict | None] | None = None
    changed: bool | None = (
        None  # whether anything now serves another version (None: recorded before it existed)
    )


class SmokeTestInput(BaseModel):
    model_name: str
    alias: str
    version: str
    target: str = "registry"
    namespace: str | None = None


class SmokeResult(BaseModel):
    passed: bool
    detail: str
    rows: int = 0


class RollbackTarget(BaseModel):
    """Where a rollback goes: from the version the alias holds to the one asked for (or ``previous``'s)."""

    from_version: str | None = None
    to_version: str | None = None
    to_model_id: str | None = None
    detail: str = ""


class DeployInput(BaseModel):
    """A training job's deploy stage (``deployment_config.auto_deploy``)."""

    job_id: str
    artifact: ModelArtifact
    config: DeploymentConfig
    requested_by: str | None = None


class ServedVersion(BaseModel):
    """``GET /api/v1/models/{model_name}/production?at=``: what served then, since when, by which operation."""

    model_name: str
    alias: str
    at: datetime
    version: str
    model_id: str | None = None
    since: datetime
    deployment_id: str
    action: str


class RecordInput(BaseModel):
    result: DeploymentResult
    event_type: Literal["model_deployed", "model_deployment_rejected", "model_rolled_back"]

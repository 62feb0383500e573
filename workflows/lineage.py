"""LineageWorkflow: one long-lived workflow per model lineage (``model_name``), id ``lineage/{model_name}``.

Every promotion and rollback of the lineage goes through it as a Temporal Update, one at a time: the validator
applies the gates (a refusal is an immediate answer that leaves no trace in the history; the caller records it),
the handler moves the alias, smoke-tests what now serves and rolls back when that fails, and records the
outcome with its event. Started by update-with-start; continues as new every ``OPERATIONS_PER_RUN`` operations
so its history stays short. Its details in the Temporal UI name the version each alias serves.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.calls import io

with workflow.unsafe.imports_passed_through():
    from pmls.contracts import activities as contract
    from pmls.contracts.deployment import (
        AVAILABLE_TARGETS,
        BAD_DEPLOYMENT,
        GATE_REJECTED,
        AliasMove,
        LineageState,
        MoveAliasInput,
        PromoteRequest,
        RecordInput,
        RollbackCommand,
        RollbackTarget,
        SmokeResult,
        SmokeTestInput,
        evaluate_gates,
        refusal,
    )
    from pmls.contracts.models import DeploymentResult
    from pmls.contracts.temporal import (
        LINEAGE_STATE_QUERY,
        LINEAGE_WORKFLOW,
        PROMOTE_UPDATE,
        ROLLBACK_UPDATE,
    )

OPERATIONS_PER_RUN = 50


@workflow.defn(name=LINEAGE_WORKFLOW)
class LineageWorkflow:
    @workflow.init
    def __init__(self, state: LineageState) -> None:
        # Set before any handler runs: update-with-start delivers the update with the first workflow task.
        self._state = state
        self._lock = asyncio.Lock()
        self._done_here = 0

    @workflow.run
    async def run(self, state: LineageState) -> None:
        self._details()
        await workflow.wait_condition(
            lambda: self._done_here >= OPERATIONS_PER_RUN or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(lambda: not self._lock.locked() and workflow.all_handlers_finished())
        workflow.continue_as_new(self._state)

    @workflow.query(name=LINEAGE_STATE_QUERY)
    def state(self) -> LineageState:
        return self._state

    # -- promote ------------------------------------------------------------------------------------------------
    @workflow.update(name=PROMOTE_UPDATE)
    async def promote(self, req: PromoteRequest) -> DeploymentResult:
        async with self._lock:
            return await self._promote(req)

    @promote.validator
    def _check_promote(self, req: PromoteRequest) -> None:
        if req.candidate.model_name != self._state.model_name:
            raise ApplicationError(
                f"model {req.candidate.model_id} belongs to lineage {req.candidate.model_name!r}, "
                f"not {self._state.model_name!r}",
                type=BAD_DEPLOYMENT,
            )
        if req.config.target not in AVAILABLE_TARGETS:
            raise ApplicationError(f"target {req.config.target!r} is not available yet", type=BAD_DEPLOYMENT)
        gates = evaluate_gates(req.candidate, req.config)
        if not req.config.force and not all(g.passed for g in gates):
            raise ApplicationError(refusal(gates), type=GATE_REJECTED)

    async def _promote(self, req: PromoteRequest) -> DeploymentResult:
        cand, cfg = req.candidate, req.config
        gates = evaluate_gates(cand, cfg)
        result = DeploymentResult(
            deployment_id=req.deployment_id,
            model_id=cand.model_id,
            model_name=cand.model_name,
            version=cand.version,
            target=cfg.target,
            alias=cfg.alias,
            status="DEPLOYED",
            deployed_at=workflow.now(),
            deployed_by=req.requested_by,
            job_id=req.job_id,
            gates=gates,
            forced=cfg.force and not all(g.passed for g in gates),
            reason=cfg.reason,
        )
        move: AliasMove = await io(
            contract.Deployments.move_alias,
            MoveAliasInput(
                model_name=cand.model_name,
                alias=cfg.alias,
                version=cand.version,
                target=cfg.target,
                replicas=cfg.replicas,
                namespace=cfg.namespace,
            ),
        )
        if not _changed(move):
            return result.model_copy(
                update={
                    "status": "UNCHANGED",
                    "message": f"version {cand.version} already serves as {cfg.alias}: nothing to do",
                }
            )
        result = result.model_copy(update={"previous_model_id": move.before_model_id})
        smoke = await self._smoke_test(move)
        if not smoke.passed:
            await io(contract.Deployments.restore_alias, move)
            back_to = f"version {move.before}" if move.before else "no version (the alias was removed)"
            result = result.model_copy(
                update={
                    "status": "ROLLED_BACK",
                    "smoke_test": smoke.detail,
                    "serving_version": move.before,
                    "message": f"the smoke test of version {cand.version} failed, so {cfg.alias} is back to "
                    f"{back_to}: {smoke.detail}",
                }
            )
            await io(contract.Deployments.record, RecordInput(result=result, event_type="model_rolled_back"))
        else:
            self._state.serving[cfg.alias] = cand.version
            result = result.model_copy(
                update={
                    "smoke_test": smoke.detail,
                    "serving_version": cand.version,
                    "message": f"models:/{cand.model_name}@{cfg.alias} now serves version {cand.version}"
                    + (" (forced past its gates)" if result.forced else ""),
                }
            )
            await io(contract.Deployments.record, RecordInput(result=result, event_type="model_deployed"))
        self._finished()
        return result

    # -- rollback -----------------------------------------------------------------------------------------------
    @workflow.update(name=ROLLBACK_UPDATE)
    async def rollback(self, cmd: RollbackCommand) -> DeploymentResult:
        async with self._lock:
            return await self._rollback(cmd)

    @rollback.validator
    def _check_rollback(self, cmd: RollbackCommand) -> None:
        if cmd.model_name != self._state.model_name:
            raise ApplicationError(
                f"lineage {cmd.model_name!r} is not {self._state.model_name!r}", type=BAD_DEPLOYMENT
            )

    async def _rollback(self, cmd: RollbackCommand) -> DeploymentResult:
        target: RollbackTarget = await io(contract.Deployments.rollback_target, cmd)
        base = DeploymentResult(
            deployment_id=cmd.deployment_id,
            model_id=target.to_model_id or "",
            model_name=cmd.model_name,
            version=target.to_version or "",
            target="registry",  # and `local` too where the alias is served locally (see move_alias)
            alias=cmd.alias,
            status="UNCHANGED",
            deployed_at=workflow.now(),
            deployed_by=cmd.requested_by,
            reason=cmd.reason,
            action="rollback",
        )
        if target.to_version is None or target.to_model_id is None:
            raise ApplicationError(target.detail, type=BAD_DEPLOYMENT, non_retryable=True)
        if target.to_version == target.from_version:
            return base.model_copy(
                update={
                    "message": f"version {target.to_version} already serves as {cmd.alias}: nothing to do"
                }
            )
        move: AliasMove = await io(
            contract.Deployments.move_alias,
            MoveAliasInput(model_name=cmd.model_name, alias=cmd.alias, version=target.to_version),
        )
        smoke = await self._smoke_test(move)
        if not smoke.passed:
            await io(contract.Deployments.restore_alias, move)
            raise ApplicationError(
                f"version {target.to_version} failed its smoke test, so {cmd.alias} stays on version "
                f"{move.before}: {smoke.detail}",
                type=BAD_DEPLOYMENT,
                non_retryable=True,
            )
        self._state.serving[cmd.alias] = target.to_version
        result = base.model_copy(
            update={
                "status": "ROLLED_BACK",
                "target": move.target,
                "previous_model_id": move.before_model_id,
                "smoke_test": smoke.detail,
                "serving_version": target.to_version,
                "message": f"{cmd.alias} rolled back from version {move.before} to version {target.to_version}",
            }
        )
        await io(contract.Deployments.record, RecordInput(result=result, event_type="model_rolled_back"))
        self._finished()
        return result

    # -- helpers ------------------------------------------------------------------------------------------------
    async def _smoke_test(self, move: AliasMove) -> SmokeResult:
        """What the alias (and its target) serve after ``move``, smoke-tested."""
        return await io(
            contract.Deployments.smoke_test,
            SmokeTestInput(
                model_name=move.model_name,
                alias=move.alias,
                version=move.version,
                target=move.target,
                namespace=move.namespace,
            ),
        )

    def _finished(self) -> None:
        self._state.operations += 1
        self._done_here += 1
        self._details()

    def _details(self) -> None:
        serving = (
            ", ".join(f"{a}: v{v}" for a, v in sorted(self._state.serving.items())) or "nothing deployed yet"
        )
        workflow.set_current_details(
            f"{self._state.model_name} — {serving} ({self._state.operations} operations)"
        )


def _changed(move: AliasMove) -> bool:
    """Whether the move changed what serves (moves recorded before ``changed`` existed: the alias or local)."""
    if move.changed is not None:
        return move.changed
    return move.before != move.version or (move.target == "local" and move.local_before != move.version)

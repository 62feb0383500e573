"""The lineage workflow's activities (training queue): move an alias and undo it, smoke-test what an alias
serves, find where a rollback goes, record an outcome with its event; and the training job's deploy stage, which
asks the lineage workflow like any other caller."""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg
import pandas as pd
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from pmls.contracts import activities as contract
from pmls.contracts.deployment import (
    BAD_DEPLOYMENT,
    AliasMove,
    DeployInput,
    MoveAliasInput,
    RecordInput,
    RollbackCommand,
    RollbackTarget,
    SmokeResult,
    SmokeTestInput,
    previous_alias,
)
from pmls.contracts.models import DeploymentResult
from pmls.deployments import prediction_mismatch, promote
from pmls.settings import Settings
from pmls.storage.cache import Cache
from pmls.storage.events import relay_outbox
from pmls.storage.postgres import ArtifactStore, DeploymentStore, LocalServingStore, Outbox
from pmls.storage.registry import ModelRegistry
from pmls.targets.kubernetes import Cluster, KubeSpec, build_objects, resource_name

log = logging.getLogger("pmls.deployment")
LOAD_TIMEOUT_SECONDS = 60  # the serving process looks for new deployments every second, then loads


class DeploymentActivities(contract.Deployments):
    def __init__(
        self, pool: asyncpg.Pool, cache: Cache, registry: ModelRegistry, temporal: Client, settings: Settings
    ) -> None:
        self.settings = settings
        self.task_queue = settings.temporal.task_queue
        self.local = LocalServingStore(pool)
        self.artifacts = ArtifactStore(pool)
        self.deployments = DeploymentStore(pool)
        self.outbox = Outbox(pool)
        self.cache = cache
        self.registry = registry
        self.temporal = temporal

    @activity.defn
    async def move_alias(self, inp: MoveAliasInput) -> AliasMove:
        """Point ``alias`` at the version; its holder until now keeps the ``previous`` alias; with target
        `local`, the serving process is asked to load it too. Idempotent: a retry after the move finds the alias
        on the version already and reports the holder it replaced (in ``previous`` by then)."""
        name, alias, prev = inp.model_name, inp.alias, previous_alias(inp.alias)
        before = await asyncio.to_thread(self.registry.alias_version, name, alias)
        previous_before = await asyncio.to_thread(self.registry.alias_version, name, prev)
        local_before = await self.local.get(name, alias)
        # Once a lineage's alias is served locally (or on the cluster), that target follows the alias, whoever
        # moves it: a rollback or a registry-only promotion included.
        namespace = inp.namespace or self.settings.kubernetes.k8s_namespace
        kube_before = await self._kube_current(name, alias, namespace) if inp.target != "local" else None
        target = inp.target
        if target == "registry" and local_before is not None:
            target = "local"
        elif target == "registry" and kube_before and kube_before[0] is not None:
            target = "kubernetes"
        if before == inp.version:
            # Already there: a no-op, or a retry of an attempt that moved it and died before answering (then the
            # holder it replaced is in ``previous``; what ``previous`` held before that is lost, a rare cost).
            attempt = activity.info().attempt
            if attempt > 1 and previous_before is not None and previous_before != inp.version:
                before = previous_before
        else:
            if before is not None:
                await asyncio.to_thread(self.registry.set_alias, name, prev, before)
            await asyncio.to_thread(self.registry.set_alias, name, alias, inp.version)
        if target == "local":
            await self.local.set(name, alias, inp.version)
        if target == "kubernetes":
            await self._kube_apply(inp, namespace)
        return AliasMove(
            model_name=name,
            alias=alias,
            version=inp.version,
            before=before,
            before_model_id=await self._model_id(name, before),
            previous_before=previous_before,
            target=target,
            local_before=local_before,
            namespace=namespace if target == "kubernetes" else None,
            kube_before=list(kube_before) if target == "kubernetes" and kube_before else None,
            changed=before != inp.version
            or (target == "local" and local_before != inp.version)
            or (target == "kubernetes" and _kube_version(kube_before) != inp.version),
        )

    @activity.defn
    async def restore_alias(self, move: AliasMove) -> None:
        """Undo a move: the alias and ``previous`` back to what they held (removed where they held nothing), and
        the local serving back to its version before."""
        name = move.model_name
        for alias, version in ((move.alias, move.before), (previous_alias(move.alias), move.previous_before)):
            if version is None:
                await asyncio.to_thread(self.registry.delete_alias, name, alias)
            else:
                await asyncio.to_thread(self.registry.set_alias, name, alias, version)
        if move.target == "local":
            await self.local.set(name, move.alias, move.local_before)
        if move.target == "kubernetes" and move.namespace:
            await asyncio.to_thread(self._kube_restore, move)

    # -- the kubernetes target ------------------------------------------------------------------------------
    async def _kube_current(
        self, name: str, alias: str, namespace: str
    ) -> tuple[dict | None, dict | None] | None:
        """The lineage alias's live objects; None when no cluster is configured."""
        if not self.settings.kubernetes.configured:
            return None
        cluster = await asyncio.to_thread(self._cluster)
        return await asyncio.to_thread(cluster.current, resource_name(name, alias), namespace)

    async def _kube_apply(self, inp: MoveAliasInput, namespace: str) -> None:
        k8s = self.settings.kubernetes
        artifact = await self.artifacts.by_version(inp.model_name, inp.version)
        if artifact is None or not artifact.bundle_sha256:
            raise ApplicationError(
                f"version {inp.version} has no artifact with a bundle hash recorded by pmls",
                type=BAD_DEPLOYMENT,
                non_retryable=True,
            )
        spec = KubeSpec(
            model_name=inp.model_name,
            alias=inp.alias,
            version=inp.version,
            bundle_sha256=artifact.bundle_sha256,
            namespace=namespace,
            image=k8s.k8s_image,
            replicas=inp.replicas,
            cpu=k8s.k8s_cpu,
            memory=k8s.k8s_memory,
            mlflow_uri=k8s.k8s_mlflow_uri or self.settings.mlflow.tracking_uri,
            mlflow_run_id=artifact.mlflow_run_id,
            env_secret=k8s.k8s_env_secret,
            service_account=k8s.k8s_service_account,
        )
        cluster = await asyncio.to_thread(self._cluster)
        await asyncio.to_thread(cluster.apply, *build_objects(spec))

    def _kube_restore(self, move: AliasMove) -> None:
        cluster = self._cluster()
        deployment, service = move.kube_before or (None, None)
        if deployment is None or service is None:
            cluster.delete(resource_name(move.model_name, move.alias), move.namespace or "")
        else:
            cluster.apply(deployment, service)

    def _cluster(self) -> Cluster:
        if not self.settings.kubernetes.configured:
            raise ApplicationError(
                "no Kubernetes cluster is configured for the workers (KUBECONFIG, ~/.kube/config or in-cluster)",
                type=BAD_DEPLOYMENT,
                non_retryable=True,
            )
        return Cluster()

    async def _smoke_kubernetes(self, inp: SmokeTestInput) -> SmokeResult:
        """The rollout completes: every replica ready, and a replica is ready only once it has loaded the version
        with its content hash verified and predicted the held-out rows as registered (its readiness probe)."""
        name, namespace = resource_name(inp.model_name, inp.alias), inp.namespace or ""
        cluster = await asyncio.to_thread(self._cluster)
        timeout = self.settings.kubernetes.k8s_rollout_timeout_seconds
        failure = await asyncio.to_thread(cluster.wait_rollout, name, namespace, timeout)
        if failure:
            return SmokeResult(passed=False, detail=failure)
        return SmokeResult(
            passed=True,
            detail=f"rollout of {namespace}/{name} complete: every replica loaded version {inp.version} with its "
            "content hash verified and predicted the held-out rows recorded at registration as the registered "
            "model did (its readiness probe)",
        )

    @activity.defn
    async def smoke_test(self, inp: SmokeTestInput) -> SmokeResult:
        """Load what the alias serves now, through the same checked loader as the champion comparison, and
        predict the held-out rows recorded at registration: the predictions must be the registered model's."""
        served = await asyncio.to_thread(self.registry.alias_version, inp.model_name, inp.alias)
        if served != inp.version:
            return SmokeResult(passed=False, detail=f"{inp.alias} serves version {served}, not {inp.version}")
        artifact = await self.artifacts.by_version(inp.model_name, inp.version)
        if artifact is None or not artifact.bundle_sha256:
            return SmokeResult(
                passed=False,
                detail=f"version {inp.version} has no artifact with a bundle hash recorded by pmls",
            )
        if inp.target == "local":
            return await self._smoke_local(inp, artifact.mlflow_run_id)
        if inp.target == "kubernetes":
            return await self._smoke_kubernetes(inp)
        return await asyncio.to_thread(self._smoke, inp, artifact.bundle_sha256, artifact.mlflow_run_id)

    async def _smoke_local(self, inp: SmokeTestInput, run_id: str | None) -> SmokeResult:
        """Over HTTP, as a client would: the serving process must have loaded the version and predict the
        reference rows as the registered model did."""
        import httpx

        from pmls.auth import api_headers

        where = f"{self.settings.serving.base_url}/v1/models/{inp.model_name}"
        params = {"alias": inp.alias}
        deadline = asyncio.get_running_loop().time() + LOAD_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=60, headers=api_headers(self.settings)) as client:
            while True:
                resp = await client.get(where, params=params)
                seen = resp.json() if resp.status_code in (200, 404) else {"message": resp.text[:300]}
                if resp.status_code == 200 and seen.get("version") == inp.version:
                    break
                if seen.get("wanted_version") == inp.version and seen.get("load_error"):
                    return SmokeResult(
                        passed=False,
                        detail=f"local serving could not load version {inp.version}: {seen['load_error']}",
                    )
                if asyncio.get_running_loop().time() > deadline:
                    return SmokeResult(
                        passed=False,
                        detail=f"local serving did not load version {inp.version} in {LOAD_TIMEOUT_SECONDS} s "
                        f"(it answered {resp.status_code}: {seen})"[:1000],
                    )
                await asyncio.sleep(0.5)
            reference = await asyncio.to_thread(self.registry.smoke_set, run_id) if run_id else None
            if reference is None:
                return SmokeResult(
                    passed=True,
                    detail=f"local serving loaded version {inp.version} (hash verified); no reference rows were "
                    "recorded at its registration, so its predictions were not compared",
                )
            rows, expected = reference
            body = {"rows": json.loads(rows.to_json(orient="records", date_format="iso"))}
            resp = await client.post(f"{where}/predict", params=params, json=body)
        if resp.status_code != 200:
            return SmokeResult(
                passed=False,
                detail=f"local serving answered {resp.status_code}: {resp.text[:500]}",
                rows=len(rows),
            )
        got = pd.DataFrame.from_records(resp.json()["predictions"])
        mismatch = prediction_mismatch(got, expected)
        if mismatch:
            return SmokeResult(passed=False, detail=f"local serving: {mismatch}", rows=len(rows))
        return SmokeResult(
            passed=True,
            rows=len(rows),
            detail=f"local serving (version {inp.version}) predicted {len(rows)} held-out test rows over HTTP as "
            "the registered model did",
        )

    def _smoke(self, inp: SmokeTestInput, sha256: str, run_id: str | None) -> SmokeResult:
        try:
            bundle = self.registry.load_checked(inp.model_name, inp.version, sha256)
        except Exception as exc:  # noqa: BLE001 - any failure to load is the smoke test's verdict
            return SmokeResult(
                passed=False, detail=f"version {inp.version} could not be loaded: {exc}"[:1000]
            )
        reference = self.registry.smoke_set(run_id) if run_id else None
        if reference is None:
            return SmokeResult(
                passed=True,
                detail=f"version {inp.version} loaded, its content hash verified; no reference rows were "
                "recorded at its registration, so its predictions were not compared",
            )
        rows, expected = reference
        try:
            got = bundle.predict(rows)
        except Exception as exc:  # noqa: BLE001
            return SmokeResult(passed=False, detail=f"version {inp.version} failed to predict: {exc}"[:1000])
        mismatch = prediction_mismatch(got, expected)
        if mismatch:
            return SmokeResult(passed=False, detail=mismatch, rows=len(rows))
        return SmokeResult(
            passed=True,
            rows=len(rows),
            detail=f"version {inp.version} predicted {len(rows)} held-out test rows as it did at registration",
        )

    @activity.defn
    async def rollback_target(self, cmd: RollbackCommand) -> RollbackTarget:
        name, alias = cmd.model_name, cmd.alias
        current = await asyncio.to_thread(self.registry.alias_version, name, alias)
        to = cmd.to_version or await asyncio.to_thread(
            self.registry.alias_version, name, previous_alias(alias)
        )
        if to is None:
            return RollbackTarget(
                from_version=current,
                detail=f"lineage {name!r} has no previous version of {alias!r} to roll back to; name one "
                "with to_version",
            )
        to_id = await self._model_id(name, to)
        if to_id is None:
            return RollbackTarget(
                from_version=current, detail=f"lineage {name!r} has no version {to} registered by pmls"
            )
        return RollbackTarget(from_version=current, to_version=to, to_model_id=to_id)

    @activity.defn
    async def record(self, inp: RecordInput) -> None:
        """The history row and its event, one transaction (both keyed by the deployment id: a retry adds
        nothing); then the relay."""
        await self.deployments.record(inp.result, inp.event_type)
        await relay_outbox(self.outbox, self.cache)

    @activity.defn
    async def deploy_model(self, inp: DeployInput) -> DeploymentResult:
        """A training job's deploy stage: the lineage workflow promotes its model, if the gates let it."""
        try:
            return await promote(
                self.temporal,
                self.task_queue,
                self.deployments,
                inp.artifact,
                inp.config,
                deployment_id=f"deploy-{inp.job_id}",
                job_id=inp.job_id,
                requested_by=inp.requested_by,
            )
        except ValueError as exc:
            raise ApplicationError(str(exc), type=BAD_DEPLOYMENT, non_retryable=True) from exc
        finally:
            await relay_outbox(self.outbox, self.cache)

    async def _model_id(self, model_name: str, version: str | None) -> str | None:
        if version is None:
            return None
        artifact = await self.artifacts.by_version(model_name, version)
        return artifact.model_id if artifact else None


def _kube_version(objects: tuple[dict | None, dict | None] | None) -> str | None:
    """The version the live Deployment serves (its annotation), None when there is none."""
    deployment = objects[0] if objects else None
    return ((deployment or {}).get("metadata") or {}).get("annotations", {}).get("pmls/version")

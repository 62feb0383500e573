"""The `kubernetes` deployment target: a Deployment and a Service per lineage and alias that serve one version.

The pods run pmls's own image (`deploy/Dockerfile`) as ``pmls serve`` in its single-model mode: they load the
version from MLflow through the checked loader (its content hash, recorded at registration, is in their
environment), predict the held-out rows recorded with it at registration and compare with the registered model's
predictions, and answer ``/readyz`` only once both hold: the readiness probe. A rollout is complete when every
replica is ready, so a completed rollout is a passed smoke test on every replica. Operator configuration the pods need (MLflow's address and credentials, the API's token
hashes or JWT settings for the `read` scope) comes from a Secret named by ``PMLS_K8S_ENV_SECRET``.

Objects are built here as plain dicts (validated offline against Kubernetes' schemas in the tests) and applied
with the official client: created, or replaced with the live object's resourceVersion.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

SERVING_PORT = 8100
MANAGED_BY = "pmls"


def resource_name(model_name: str, alias: str) -> str:
    """A DNS-1123 label for the lineage's alias (``pmls-<name>-<alias>``), shortened with a digest past 63."""
    raw = f"pmls-{model_name}-{alias}".lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    if len(name) > 63 or name != raw:
        digest = hashlib.sha256(f"{model_name}/{alias}".encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


@dataclass(frozen=True)
class KubeSpec:
    """What the objects are made of: the version, and the operator's settings and the request's choices."""

    model_name: str
    alias: str
    version: str
    bundle_sha256: str
    namespace: str
    image: str
    replicas: int
    cpu: str
    memory: str
    mlflow_uri: str
    mlflow_run_id: str | None = None  # the version's run: the held-out rows a pod predicts before it is ready
    env_secret: str | None = None
    service_account: str | None = None


def build_objects(spec: KubeSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Deployment, Service) manifests for ``spec``."""
    name = resource_name(spec.model_name, spec.alias)
    labels = {
        "app.kubernetes.io/name": "pmls-serving",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    annotations = {"pmls/lineage": spec.model_name, "pmls/alias": spec.alias, "pmls/version": spec.version}
    env = [
        {"name": "PMLS_SERVE_MODEL", "value": spec.model_name},
        {"name": "PMLS_SERVE_ALIAS", "value": spec.alias},
        {"name": "PMLS_SERVE_VERSION", "value": spec.version},
        {"name": "PMLS_SERVE_SHA256", "value": spec.bundle_sha256},
        {"name": "PMLS_MLFLOW_TRACKING_URI", "value": spec.mlflow_uri},
    ]
    if spec.mlflow_run_id:
        env.append({"name": "PMLS_SERVE_RUN_ID", "value": spec.mlflow_run_id})
    container: dict[str, Any] = {
        "name": "serve",
        "image": spec.image,
        "args": ["serve", "--host", "0.0.0.0", "--port", str(SERVING_PORT)],
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": spec.cpu, "memory": spec.memory},
            "limits": {"memory": spec.memory},
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
        },
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    if spec.env_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.env_secret}}]
    pod_spec: dict[str, Any] = {"containers": [container]}
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "progressDeadlineSeconds": 300,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/instance": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return deployment, service


class Cluster:
    """The objects of one lineage alias on a cluster (the kubeconfig, or the in-cluster service account)."""

    def __init__(self) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.core, self.apps = client.CoreV1Api(), client.AppsV1Api()

    def current(self, name: str, namespace: str) -> tuple[dict | None, dict | None]:
        """The live (Deployment, Service), as manifests to re-apply (None where absent)."""
        from kubernetes.client.exceptions import ApiException

        out: list[dict | None] = []
        for read in (self.apps.read_namespaced_deployment, self.core.read_namespaced_service):
            try:
                live = self.apps.api_client.sanitize_for_serialization(read(name, namespace))
            except ApiException as exc:
                if exc.status != 404:
                    raise
                out.append(None)
                continue
            meta = live["metadata"]
            live["metadata"] = {
                k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta
            }
            live.pop("status", None)
            if live["kind"] == "Service":
                live["spec"] = {k: v for k, v in live["spec"].items() if k in ("type", "selector", "ports")}
            out.append(live)
        return out[0], out[1]

    def apply(self, deployment: dict, service: dict) -> None:
        from kubernetes.client.exceptions import ApiException

        ns, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        for kind, create, replace, read, body in (
            (
                "deployment",
                self.apps.create_namespaced_deployment,
                self.apps.replace_namespaced_deployment,
                self.apps.read_namespaced_deployment,
                deployment,
            ),
            (
                "service",
                self.core.create_namespaced_service,
                self.core.replace_namespaced_service,
                self.core.read_namespaced_service,
                service,
            ),
        ):
            try:
                live = read(name, ns)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                create(ns, body)
                continue
            body = {
                **body,
                "metadata": {**body["metadata"], "resourceVersion": live.metadata.resource_version},
            }
            if kind == "service":
                body["spec"] = {**body["spec"], "clusterIP": live.spec.cluster_ip}
            replace(name, ns, body)

    def delete(self, name: str, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        for delete in (self.apps.delete_namespaced_deployment, self.core.delete_namespaced_service):
            try:
                delete(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def wait_rollout(self, name: str, namespace: str, timeout: float, heartbeat=lambda: None) -> str | None:
        """None once every replica of the latest generation is updated and ready; else why not, at ``timeout``
        or as soon as the Deployment reports its progress deadline exceeded."""
        deadline = time.monotonic() + timeout
        while True:
            heartbeat()
            dep = self.apps.read_namespaced_deployment_status(name, namespace)
            status, want = dep.status, dep.spec.replicas or 0
            if (
                (status.observed_generation or 0) >= (dep.metadata.generation or 0)
                and (status.updated_replicas or 0) == want
                and (status.ready_replicas or 0) == want
                and (status.available_replicas or 0) == want
            ):
                return None
            for cond in status.conditions or []:
                if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                    return f"rollout of {namespace}/{name} exceeded its progress deadline: {cond.message}"
            if time.monotonic() > deadline:
                return (
                    f"rollout of {namespace}/{name} not complete after {timeout:.0f} s: "
                    f"{status.ready_replicas or 0} of {want} replicas ready"
                )
            time.sleep(2)

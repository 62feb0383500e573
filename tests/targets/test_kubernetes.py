"""The `kubernetes` target's objects, validated offline against Kubernetes' own schemas (kubernetes-validate
bundles them); and, when KUBECONFIG names a cluster, a real promotion and rollback on it."""

from __future__ import annotations

import os

import kubernetes_validate
import pytest

from pmls.targets.kubernetes import SERVING_PORT, KubeSpec, build_objects, resource_name

K8S_VERSION = "1.33.0"


def spec(**changes) -> KubeSpec:
    base = {
        "model_name": "churn",
        "alias": "production",
        "version": "7",
        "bundle_sha256": "ab" * 32,
        "namespace": "models",
        "image": "registry.example/pmls:1.2.3",
        "replicas": 3,
        "cpu": "500m",
        "memory": "1Gi",
        "mlflow_uri": "http://mlflow.mlops:5000",
        "mlflow_run_id": "0123456789abcdef",
    }
    return KubeSpec(**{**base, **changes})


@pytest.mark.parametrize(
    "changes", [{}, {"env_secret": "pmls-serving-env", "service_account": "pmls-serving", "replicas": 1}]
)
def test_the_objects_are_valid_kubernetes(changes):
    deployment, service = build_objects(spec(**changes))
    for manifest in (deployment, service):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PMLS_SERVE_VERSION"] == "7" and env["PMLS_SERVE_SHA256"] == "ab" * 32
    assert (
        env["PMLS_SERVE_RUN_ID"] == "0123456789abcdef"
    )  # the rows it must predict as registered to be ready
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployment["spec"]["replicas"] == (changes.get("replicas") or 3)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert container["ports"][0]["containerPort"] == SERVING_PORT


def test_an_invalid_object_is_caught_offline():
    deployment, _ = build_objects(spec())
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("model_name", "alias"),
    [("churn", "production"), ("Churn_Model.v2", "staging"), ("x" * 64, "production")],
)
def test_resource_names_are_dns_labels(model_name, alias):
    name = resource_name(model_name, alias)
    assert len(name) <= 63 and name == name.lower() and name[0].isalpha() and name[-1].isalnum()
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert resource_name("Churn_Model.v2", "production") != resource_name("churn-model-v2", "production")


@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="no cluster: set KUBECONFIG to run it on one")
def test_promote_and_roll_back_on_a_real_cluster(api, demo_request):
    """Needs the image `PMLS_K8S_IMAGE` pullable by the cluster and MLflow reachable from it
    (`PMLS_K8S_MLFLOW_URI`); runs only where KUBECONFIG is set."""
    from kubernetes import client, config

    from tests.helpers import unique, wait_for

    lineage = unique("k8s")
    versions = []
    for _ in range(2):
        job_id = unique("k8s")
        body = demo_request(job_id, model_name=lineage)
        assert api.post("/api/v1/training/start", json=body).status_code == 202
        job = wait_for(api, job_id, timeout=300)
        versions.append(job["model_id"])
    first = api.post(
        f"/api/v1/models/deploy/{versions[0]}", json={"target": "kubernetes", "force": True}, timeout=600
    ).json()
    assert first["status"] == "DEPLOYED", first
    second = api.post(
        f"/api/v1/models/deploy/{versions[1]}", json={"target": "kubernetes", "force": True}, timeout=600
    ).json()
    assert second["status"] == "DEPLOYED", second
    back = api.post(f"/api/v1/models/{lineage}/rollback", json={}, timeout=600).json()
    assert back["status"] == "ROLLED_BACK" and back["target"] == "kubernetes", back
    config.load_kube_config()
    live = client.AppsV1Api().read_namespaced_deployment(
        resource_name(lineage, "production"), os.environ.get("PMLS_K8S_NAMESPACE", "default")
    )
    assert live.metadata.annotations["pmls/version"] == first["version"]

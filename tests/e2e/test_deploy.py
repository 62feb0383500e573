"""Gated promotion through the lineage workflow, on the real stack: a job's deploy stage, the gates' refusals,
manual deploys and rollbacks, the smoke test's automatic rollback, serialised concurrent deploys, the
served-when history and the events."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import mlflow
import psycopg2
import pytest
import redis

from tests.helpers import temporal, unique, wait_for

pytestmark = pytest.mark.slow


def _train(api, demo_request, lineage: str, **deployment) -> tuple[dict, dict]:
    job_id = unique("dep")
    body = demo_request(job_id, model_name=lineage, random_seed=3)
    body["deployment_config"] = deployment
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, job_id, timeout=240)
    assert job["status"] == "COMPLETED", job.get("error")
    return job, api.get(f"/api/v1/models/artifacts/{job['model_id']}").json()


def _production(settings, lineage: str) -> str | None:
    client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    try:
        return str(client.get_model_version_by_alias(lineage, "production").version)
    except mlflow.exceptions.MlflowException:
        return None


def _events(settings, deployment_ids: set[str]) -> list[dict]:
    cache = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    found = []
    for _id, fields in cache.xrange("pmls:events"):
        payload = json.loads(fields["payload"])
        if payload.get("deployment", {}).get("deployment_id") in deployment_ids:
            found.append({"event_type": fields["event_type"], "event_id": fields["event_id"], **payload})
    return found


@pytest.fixture(scope="module")
def lineage(api, demo_request) -> dict:
    """Two versions of a fresh lineage: the first deployed by its job's deploy stage; the second's job asked
    for a deploy too, with a gate it cannot pass."""
    name = unique("lineage")
    job1, v1 = _train(api, demo_request, name, auto_deploy=True)
    job2, v2 = _train(api, demo_request, name, auto_deploy=True, min_primary_metric=0.9999)
    return {"name": name, "job1": job1, "v1": v1, "job2": job2, "v2": v2}


def test_a_job_deploys_its_model_when_the_gates_pass_and_not_when_one_fails(api, settings, lineage):
    name, v1, v2 = lineage["name"], lineage["v1"], lineage["v2"]
    history = api.get(f"/api/v1/models/{name}/deployments").json()
    by_job = {h["job_id"]: h for h in history}
    first, second = by_job[lineage["job1"]["job_id"]], by_job[lineage["job2"]["job_id"]]
    assert first["status"] == "DEPLOYED" and first["model_id"] == v1["model_id"], first
    assert first["serving_version"] == v1["version"]
    assert second["status"] == "REJECTED" and second["model_id"] == v2["model_id"], second
    failed = [g for g in second["gates"] if not g["passed"]]
    assert [g["gate"] for g in failed] == ["min_primary_metric"], second["gates"]
    assert (
        failed[0]["threshold"] == 0.9999
        and failed[0]["value"] == v2["performance_metrics"]["test"]["roc_auc"]
    )
    assert "min_primary_metric" in second["message"]
    assert _production(settings, name) == v1["version"]

    # The lineage workflow is visible in Temporal, its details naming what serves.
    async def describe(client):
        return await client.get_workflow_handle(f"lineage/{name}").describe()

    desc = temporal(settings, describe)
    assert desc.status.name == "RUNNING"

    events = _events(settings, {first["deployment_id"], second["deployment_id"]})
    assert sorted(e["event_type"] for e in events) == ["model_deployed", "model_deployment_rejected"], events
    assert len({e["event_id"] for e in events}) == 2


def test_a_manual_deploy_that_fails_a_gate_is_rejected_with_the_gate_named(api, settings, lineage):
    name, v2 = lineage["name"], lineage["v2"]
    resp = api.post(f"/api/v1/models/deploy/{v2['model_id']}", json={"max_model_size_mb": 1e-6})
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["status"] == "REJECTED"
    assert "max_model_size_mb" in result["message"]
    assert _production(settings, name) == lineage["v1"]["version"]


def test_deploy_rollback_and_served_when(api, settings, lineage):
    name, v1, v2 = lineage["name"], lineage["v1"], lineage["v2"]
    before = datetime.now(UTC)
    time.sleep(0.5)
    resp = api.post(f"/api/v1/models/deploy/{v2['model_id']}", json={"force": True, "reason": "test"})
    deployed = resp.json()
    assert resp.status_code == 200 and deployed["status"] == "DEPLOYED", deployed
    assert deployed["previous_model_id"] == v1["model_id"] and deployed["reason"] == "test"
    assert "held-out test rows" in deployed["smoke_test"], deployed
    assert _production(settings, name) == v2["version"]

    # Deploying what already serves is a no-op that says so.
    again = api.post(f"/api/v1/models/deploy/{v2['model_id']}", json={"force": True}).json()
    assert again["status"] == "UNCHANGED" and "already serves" in again["message"]

    then = api.get(f"/api/v1/models/{name}/production", params={"at": before.isoformat()}).json()
    now = api.get(f"/api/v1/models/{name}/production").json()
    assert then["version"] == v1["version"] and now["version"] == v2["version"], (then, now)

    rolled = api.post(f"/api/v1/models/{name}/rollback", json={"reason": "bad metrics"})
    assert rolled.status_code == 200, rolled.text
    back = rolled.json()
    assert back["status"] == "ROLLED_BACK" and back["version"] == v1["version"]
    assert back["previous_model_id"] == v2["model_id"] and back["action"] == "rollback"
    assert _production(settings, name) == v1["version"]
    history = api.get(f"/api/v1/models/{name}/deployments").json()
    assert history[0]["deployment_id"] == back["deployment_id"]
    events = _events(settings, {deployed["deployment_id"], back["deployment_id"]})
    assert sorted(e["event_type"] for e in events) == ["model_deployed", "model_rolled_back"]

    missing = api.post(f"/api/v1/models/{name}/rollback", json={"to_version": "999"})
    assert missing.status_code == 409 and "999" in missing.json()["message"]


def test_a_failed_smoke_test_rolls_back(api, settings, lineage):
    """The registry's copy of the version no longer matches what pmls recorded at registration (its content
    hash): the promoted version cannot be loaded, so the alias goes back."""
    name, v1, v2 = lineage["name"], lineage["v1"], lineage["v2"]
    assert _production(settings, name) == v1["version"]
    with psycopg2.connect(settings.database.url) as conn, conn.cursor() as cur:
        cur.execute("SELECT bundle_sha256 FROM model_artifacts WHERE model_id = %s", (v2["model_id"],))
        (digest,) = cur.fetchone()
        cur.execute(
            "UPDATE model_artifacts SET bundle_sha256 = %s WHERE model_id = %s", ("0" * 64, v2["model_id"])
        )
    try:
        result = api.post(f"/api/v1/models/deploy/{v2['model_id']}", json={"force": True}).json()
    finally:
        with psycopg2.connect(settings.database.url) as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE model_artifacts SET bundle_sha256 = %s WHERE model_id = %s", (digest, v2["model_id"])
            )
    assert result["status"] == "ROLLED_BACK", result
    assert "content hash" in result["smoke_test"] and result["serving_version"] == v1["version"]
    assert _production(settings, name) == v1["version"]
    now = api.get(f"/api/v1/models/{name}/production").json()
    assert now["version"] == v1["version"]
    assert [e["event_type"] for e in _events(settings, {result["deployment_id"]})] == ["model_rolled_back"]


def test_concurrent_deploys_of_one_lineage_are_serialised(api, settings, lineage):
    """Six deploys at once, alternating two versions: each promotion saw the one before it (its previous
    model is what the alias held when it ran), so none overwrote another's move unseen."""
    name, v1, v2 = lineage["name"], lineage["v1"], lineage["v2"]
    results: list[dict] = []

    def deploy(model_id: str) -> None:
        resp = api.post(f"/api/v1/models/deploy/{model_id}", json={"force": True}, timeout=180)
        results.append(resp.json())

    threads = [threading.Thread(target=deploy, args=(m["model_id"],)) for m in (v2, v1) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r["status"] in ("DEPLOYED", "UNCHANGED") for r in results), results
    ids = {r["deployment_id"] for r in results if r["status"] == "DEPLOYED"}
    moves = sorted(
        (h for h in api.get(f"/api/v1/models/{name}/deployments").json() if h["deployment_id"] in ids),
        key=lambda h: h["deployed_at"],
    )
    assert moves, results
    for earlier, later in zip(moves, moves[1:], strict=False):
        assert later["previous_model_id"] == earlier["model_id"], moves
    assert _production(settings, moves[-1]["model_name"]) == moves[-1]["version"]


def test_the_local_target_serves_predictions_over_http(api, settings, lineage, demo_data):
    """`local`: the serving process loads the version and answers predictions over HTTP; from then on it
    follows the alias, so a later promotion (any target) or rollback moves what it serves too."""
    import httpx
    import pandas as pd

    from pmls.auth import api_headers

    name, v1, v2 = lineage["name"], lineage["v1"], lineage["v2"]
    result = api.post(
        f"/api/v1/models/deploy/{v1['model_id']}", json={"force": True, "target": "local"}
    ).json()
    assert result["status"] == "DEPLOYED" and result["target"] == "local", result
    assert "over HTTP" in result["smoke_test"], result
    rows = pd.read_parquet(demo_data).drop(columns=["churned"]).tail(5)
    body = {"rows": json.loads(rows.to_json(orient="records", date_format="iso"))}
    with httpx.Client(
        base_url=settings.serving.base_url, headers=api_headers(settings), timeout=60
    ) as serving:
        assert (
            serving.post(f"/v1/models/{name}/predict", json=body, headers={"Authorization": ""}).status_code
            == 401
        )
        answer = serving.post(f"/v1/models/{name}/predict", json=body)
        assert answer.status_code == 200, answer.text
        served = answer.json()
        assert served["version"] == v1["version"] and len(served["predictions"]) == 5
        assert set(served["predictions"][0]) >= {"prediction", "proba_0", "proba_1"}, served["predictions"][0]
        assert serving.post(f"/v1/models/{name}/predict", json={"rows": [{"x": 1}]}).status_code == 422

        moved = api.post(f"/api/v1/models/deploy/{v2['model_id']}", json={"force": True}).json()
        assert moved["status"] == "DEPLOYED" and "over HTTP" in moved["smoke_test"], moved
        assert serving.get(f"/v1/models/{name}").json()["version"] == v2["version"]
        back = api.post(f"/api/v1/models/{name}/rollback", json={}).json()
        assert back["status"] == "ROLLED_BACK" and back["target"] == "local", back
        assert serving.post(f"/v1/models/{name}/predict", json=body).json()["version"] == v1["version"]


def test_a_serving_pod_loads_its_one_version_and_only_then_is_ready(stack, settings, lineage, demo_data):
    """What a `kubernetes` target's pod runs: `pmls serve` in single-model mode (no PostgreSQL), ready once the
    version is loaded with its content hash verified and predicts its registration's held-out rows as it did
    then; a wrong hash never becomes ready."""
    import httpx
    import pandas as pd

    from pmls.auth import api_headers
    from pmls.stack import free_port
    from tests.helpers import extra_process

    v1 = lineage["v1"]
    rows = pd.read_parquet(demo_data).drop(columns=["churned"]).tail(3)
    body = {"rows": json.loads(rows.to_json(orient="records", date_format="iso"))}
    for sha, ready in ((v1["bundle_sha256"], True), ("0" * 64, False)):
        port = free_port()
        env = {
            "PMLS_SERVING_PORT": str(port),
            "PMLS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",  # proves it needs no PostgreSQL
            "PMLS_SERVE_MODEL": lineage["name"],
            "PMLS_SERVE_VERSION": v1["version"],
            "PMLS_SERVE_SHA256": sha,
            "PMLS_SERVE_RUN_ID": v1["mlflow_run_id"],  # ready only once it predicts these rows as registered
        }
        with (
            extra_process(stack, ["serve"], env),
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=api_headers(settings), timeout=30
            ) as pod,
        ):
            deadline, status = time.monotonic() + 60, None
            while time.monotonic() < deadline:
                try:
                    status = pod.get("/readyz").status_code
                except httpx.HTTPError:
                    status = None
                if status == 200 or (status == 503 and not ready and time.monotonic() > deadline - 50):
                    break
                time.sleep(0.5)
            if ready:
                assert status == 200
                answer = pod.post(f"/v1/models/{lineage['name']}/predict", json=body).json()
                assert answer["version"] == v1["version"] and len(answer["predictions"]) == 3, answer
            else:
                assert status == 503
                seen = pod.get(f"/v1/models/{lineage['name']}").json()
                assert "content hash" in seen["load_error"], seen


def test_forcing_past_the_gates_needs_the_admin_scope(settings, lineage, credentials):
    import httpx

    deployer = {"Authorization": f"Bearer {credentials.jwt('deployer', 'read deploy')}"}
    with httpx.Client(base_url=settings.api.base_url, headers=deployer, timeout=120) as api:
        forced = api.post(f"/api/v1/models/deploy/{lineage['v2']['model_id']}", json={"force": True})
        assert forced.status_code == 403 and "admin" in forced.json()["message"], forced.text
        gated = api.post(
            f"/api/v1/models/deploy/{lineage['v2']['model_id']}", json={"max_model_size_mb": 1e-6}
        )
        assert gated.status_code == 200 and gated.json()["status"] == "REJECTED", gated.text
        assert gated.json()["deployed_by"] == "deployer"


def test_the_cli_deploys_rolls_back_and_shows_the_history(stack, lineage):
    import subprocess
    import sys

    name, v2 = lineage["name"], lineage["v2"]
    env = stack.child_env() | {"COLUMNS": "250"}

    def pmls(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pmls.cli", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = pmls("deploy", v2["model_id"], "--force", "--reason", "from the cli")
    assert "DEPLOYED" in out or "UNCHANGED" in out, out
    assert "ROLLED_BACK" in pmls("rollback", name, "--reason", "cli rollback")
    history = pmls("history", name, "--limit", "50")
    assert "cli rollback" in history and "rollback" in history and "REJECTED" in history, history


def test_kubernetes_without_a_cluster_is_refused(api, lineage, demo_request):
    resp = api.post(f"/api/v1/models/deploy/{lineage['v1']['model_id']}", json={"target": "kubernetes"})
    assert resp.status_code == 422 and "kubernetes" in resp.json()["message"], resp.text
    body = demo_request(unique("dep"), deployment_config={"auto_deploy": True, "target": "kubernetes"})
    resp = api.post("/api/v1/training/start", json=body)
    assert resp.status_code == 422 and "kubernetes" in resp.json()["message"], resp.text


def test_deployment_events_wait_out_a_redis_outage(api, stack, settings, lineage):
    """Redis down while a lineage is rolled back and promoted again: both answered, and both events reach the
    stream once it is back, each once."""
    if not stack.settings.redis.embedded:
        pytest.skip("Redis is external (PMLS_REDIS_URL); the test stops only an embedded one")
    name, v1, v2 = lineage["name"], lineage["v1"], lineage["v2"]
    stack.pause("redis")
    try:
        other = v2 if _production(settings, name) == v1["version"] else v1
        first = api.post(f"/api/v1/models/deploy/{other['model_id']}", json={"force": True}).json()
        back = api.post(f"/api/v1/models/{name}/rollback", json={"reason": "redis outage test"}).json()
    finally:
        stack.resume("redis")
    assert first["status"] == "DEPLOYED" and back["status"] == "ROLLED_BACK", (first, back)
    ids = {first["deployment_id"], back["deployment_id"]}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(events := _events(settings, ids)) < 2:
        time.sleep(0.5)
    assert sorted(e["event_type"] for e in events) == ["model_deployed", "model_rolled_back"], events

"""Authentication and scopes on the real API: every /api/v1 route wants a bearer credential (an operator token
or a JWT from the identity provider), each call its scope; health stays open. Who started a job and who deployed
a version is recorded."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from pmls.storage.postgres import create_pool
from tests.helpers import unique, wait_for

ROUTES = [
    ("GET", "/api/v1/training/jobs"),
    ("GET", "/api/v1/training/jobs/active"),
    ("GET", "/api/v1/training/x/status"),
    ("GET", "/api/v1/training/x/trials"),
    ("POST", "/api/v1/training/x/cancel"),
    ("POST", "/api/v1/training/start"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/v1/models/artifacts/x"),
    ("GET", "/api/v1/models/x/deployments"),
    ("POST", "/api/v1/models/deploy/x"),
]


@pytest.fixture(scope="module")
def anonymous(settings):
    with httpx.Client(base_url=settings.api.base_url, timeout=60) as client:
        yield client


def _as(client: httpx.Client, token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _client(settings, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=settings.api.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    )


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_wants_a_credential(anonymous, method, path):
    for headers in ({}, {"Authorization": "Bearer pmls_not-a-token"}, {"Authorization": "Basic dTpw"}):
        resp = anonymous.request(method, path, headers=headers, json={} if method == "POST" else None)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert "Bearer" in resp.json()["message"] or "not valid" in resp.json()["message"]


def test_health_stays_open_and_openapi_declares_the_scheme(anonymous):
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 200
    spec = anonymous.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_scopes_decide_what_a_token_may_do(anonymous, settings, credentials, demo_request):
    reader, trainer = _as(anonymous, credentials.reader), _as(anonymous, credentials.trainer)
    assert anonymous.get("/api/v1/training/jobs", headers=reader).status_code == 200
    body = demo_request(unique("scoped"))
    refused = anonymous.post("/api/v1/training/start", json=body, headers=reader)
    assert refused.status_code == 403 and "'train' scope" in refused.json()["message"]
    assert anonymous.get(f"/api/v1/training/{body['training_id']}/status", headers=reader).status_code == 404

    assert anonymous.post("/api/v1/training/start", json=body, headers=trainer).status_code == 202
    with _client(settings, credentials.trainer) as as_trainer:
        job = wait_for(as_trainer, body["training_id"], timeout=120)
    assert job["status"] == "COMPLETED" and job["started_by"] == "trainer"
    deploy = anonymous.post(f"/api/v1/models/deploy/{job['model_id']}", headers=trainer)
    assert deploy.status_code == 403 and "'deploy' scope" in deploy.json()["message"]
    history = anonymous.get(f"/api/v1/models/{body['model_name']}/deployments", headers=reader).json()
    assert all(d["model_id"] != job["model_id"] for d in history)  # the refused deploy left nothing


def test_a_deploy_records_who_did_it(api, demo_request):
    body = demo_request(unique("who"))
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, body["training_id"], timeout=120)
    assert job["started_by"] == "local-admin"
    deployed = api.post(f"/api/v1/models/deploy/{job['model_id']}").json()
    assert deployed["deployed_by"] == "local-admin"
    history = api.get(f"/api/v1/models/{body['model_name']}/deployments").json()
    assert history[0]["deployed_by"] == "local-admin"


def test_jwts_from_the_identity_provider(anonymous, credentials, demo_request):
    good = _as(anonymous, credentials.jwt("alice@example.org", "read train"))
    body = demo_request(unique("jwt"))
    assert anonymous.post("/api/v1/training/start", json=body, headers=good).status_code == 202
    assert anonymous.get(f"/api/v1/training/{body['training_id']}/status", headers=good).json()[
        "started_by"
    ] == ("alice@example.org")
    read_only = _as(anonymous, credentials.jwt("bob", "read"))
    assert anonymous.post("/api/v1/training/x/cancel", headers=read_only).status_code == 403

    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        credentials.jwt("alice", "read", seconds=-60),  # expired
        credentials.jwt("alice", "read", audience="another-api"),
        credentials.jwt("alice", "read", key=stranger),  # signed by a key the JWKS does not hold
    ):
        assert anonymous.get("/api/v1/training/jobs", headers=_as(anonymous, token)).status_code == 401


def test_a_caller_at_its_active_job_limit_gets_429(settings, credentials, anonymous, demo_request):
    """The count is read from the job table, the source of truth: rows of running jobs are put there directly."""
    limit = settings.auth.max_active_jobs_per_caller
    tag = unique("limit")

    async def rows(sql: str, *args) -> None:
        pool = await create_pool(settings.database.url)
        try:
            await pool.execute(sql, *args)
        finally:
            await pool.close()

    asyncio.run(
        rows(
            """INSERT INTO training_jobs (job_id, model_type, training_mode, status, training_config, request_hash,
                   started_by)
               SELECT $1 || '_' || n, 'LIGHTGBM', 'FULL_RETRAIN', 'RUNNING', '{}'::jsonb, 'x', 'reader'
               FROM generate_series(1, $2) AS n""",
            tag,
            limit,
        )
    )
    try:
        token = credentials.jwt("reader", "read train")  # the same name as the reader token: one caller
        resp = anonymous.post(
            "/api/v1/training/start", json=demo_request(unique("over")), headers=_as(anonymous, token)
        )
        assert resp.status_code == 429 and resp.headers["retry-after"]
        assert f"{limit} jobs queued or running" in resp.json()["message"]
    finally:
        asyncio.run(rows("DELETE FROM training_jobs WHERE job_id LIKE $1 || '_%'", tag))

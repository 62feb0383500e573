"""A job through the real stack: API -> Temporal -> workers -> PostgreSQL, Redis, MLflow, the event stream."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import psycopg2
import pytest
import redis

from tests.helpers import unique, wait_for


@pytest.fixture(scope="module")
def completed(api, demo_request) -> dict:
    job_id = unique("lifecycle")
    resp = api.post("/api/v1/training/start", json=demo_request(job_id))
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "QUEUED"
    return wait_for(api, job_id)


def test_job_completes_with_a_registered_model_and_real_metrics(completed):
    assert completed["status"] == "COMPLETED", completed.get("error")
    assert completed["progress_percentage"] == 100
    metrics = completed["training_metrics"]
    assert metrics["test_metrics"]["roc_auc"] > 0.7  # the generated churn signal is learnable
    assert 0.5 < metrics["validation_accuracy"] <= 1.0
    assert metrics["feature_importance"] and "customer_id" not in metrics["feature_importance"]
    assert completed["model_id"] == "churn_test_lightgbm_v" + completed["model_id"].rsplit("_v", 1)[1]


def test_model_artifact_is_served_and_cached(api, settings, completed):
    resp = api.get(f"/api/v1/models/artifacts/{completed['model_id']}")
    assert resp.status_code == 200
    artifact = resp.json()
    assert artifact["training_job_id"] == completed["job_id"]
    assert artifact["model_type"] == "LIGHTGBM"
    assert artifact["performance_metrics"]["primary_metric"] == "roc_auc"
    assert artifact["model_size_mb"] > 0
    assert artifact["deployment_ready"] is True
    cache = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    assert 0 < cache.ttl(f"model_artifacts:{completed['model_id']}") <= 24 * 3600
    status_ttl = cache.ttl(f"training_status:{completed['job_id']}")
    assert 23 * 3600 < status_ttl <= 24 * 3600
    assert json.loads(cache.get(f"training_status:{completed['job_id']}"))["status"] == "COMPLETED"


def test_rows_are_written_to_postgres(settings, completed):
    with psycopg2.connect(settings.database.url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, model_type, training_mode, progress_percentage, completed_at IS NOT NULL "
            "FROM training_jobs WHERE job_id = %s",
            (completed["job_id"],),
        )
        assert cur.fetchone() == ("COMPLETED", "LIGHTGBM", "FULL_RETRAIN", 100.0, True)
        cur.execute(
            "SELECT model_id, version FROM model_artifacts WHERE training_job_id = %s", (completed["job_id"],)
        )
        assert cur.fetchone()[0] == completed["model_id"]
        cur.execute(
            "SELECT published_at IS NOT NULL FROM event_outbox WHERE aggregate_id = %s",
            (completed["job_id"],),
        )
        assert cur.fetchall() == [(True,)]


def test_completed_event_is_on_the_stream_with_the_seed_payload(settings, completed):
    cache = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    events = [
        json.loads(fields["payload"])
        for _id, fields in cache.xrange("pmls:events")
        if fields["event_type"] == "model_training_completed"
    ]
    mine = [e for e in events if e["training_completed"]["training_job_id"] == completed["job_id"]]
    assert len(mine) == 1
    data = mine[0]["training_completed"]
    assert set(data) == {
        "training_job_id",
        "model_id",
        "model_type",
        "training_duration_minutes",
        "final_accuracy",
        "validation_accuracy",
        "hyperparameter_trials",
        "deployment_ready",
        "performance_improvement",
    }
    assert data["model_id"] == completed["model_id"] and data["model_type"] == "LIGHTGBM"
    assert data["final_accuracy"] == pytest.approx(completed["training_metrics"]["test_metrics"]["accuracy"])
    assert set(mine[0]) == {"event_id", "timestamp", "training_completed"}


def test_registered_model_predicts_raw_rows(settings, completed, demo_data):
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    artifact_version = completed["model_id"].rsplit("_v", 1)[1]
    model = mlflow.pyfunc.load_model(f"models:/churn_test/{artifact_version}")
    rows = pd.read_parquet(demo_data).drop(columns=["churned"]).tail(50)
    out = model.predict(rows)
    assert list(out.columns) == ["prediction", "proba_0", "proba_1"]
    assert ((out["proba_0"] + out["proba_1"]).round(6) == 1).all()
    assert set(out["prediction"].unique()) <= {0, 1}


def test_run_has_plots_people_would_rather_look_at(settings, completed):
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    client = mlflow.MlflowClient()
    run_id = client.get_model_version("churn_test", completed["model_id"].rsplit("_v", 1)[1]).run_id
    names = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {
        "plots/feature_importance.png",
        "plots/confusion_matrix.png",
        "plots/roc_curve.png",
        "plots/cv_scores.png",
        "plots/selected_features.png",
    } <= names


def test_deploy_moves_the_production_alias(api, settings, completed):
    resp = api.post(f"/api/v1/models/deploy/{completed['model_id']}", json={})
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["status"] == "DEPLOYED" and result["alias"] == "production"
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    version = mlflow.MlflowClient().get_model_version_by_alias("churn_test", "production").version
    assert str(version) == result["version"]
    history = api.get("/api/v1/models/churn_test/deployments").json()
    assert history[0]["deployment_id"] == result["deployment_id"]


def test_same_id_same_body_returns_the_job_and_another_body_conflicts(api, demo_request, completed):
    body = demo_request(completed["job_id"])
    again = api.post("/api/v1/training/start", json=body)
    assert again.status_code == 200
    assert again.json()["status"] == "COMPLETED"
    assert again.json()["model_id"] == completed["model_id"]
    body["dataset_config"]["class_balancing"] = True
    conflict = api.post("/api/v1/training/start", json=body)
    assert conflict.status_code == 409
    assert "training_id" in conflict.json()["message"]


def test_unknown_job_and_model_are_404(api):
    assert api.get("/api/v1/training/no_such_job/status").status_code == 404
    assert api.post("/api/v1/training/no_such_job/cancel").status_code == 404
    assert api.get("/api/v1/models/artifacts/no_such_model").status_code == 404
    assert api.post("/api/v1/models/deploy/no_such_model", json={}).status_code == 404


def test_completed_job_is_listed_but_not_active(api, completed):
    all_ids = [j["job_id"] for j in api.get("/api/v1/training/jobs").json()]
    active_ids = [j["job_id"] for j in api.get("/api/v1/training/jobs/active").json()]
    assert completed["job_id"] in all_ids and completed["job_id"] not in active_ids


def test_temporal_search_attributes_and_summary(settings, completed):
    from tests.helpers import temporal

    async def describe(client):
        return await client.get_workflow_handle(completed["job_id"]).describe()

    async def runs(client):
        return [w async for w in client.list_workflows(f"WorkflowId = '{completed['job_id']}'")]

    assert len(temporal(settings, runs)) == 1  # the idempotent re-start above did not run the job again
    desc = temporal(settings, describe)
    attrs = {key.name: value for key, value in desc.typed_search_attributes}
    assert attrs["TrainingStatus"] == "COMPLETED"
    assert attrs["ModelType"] == "LIGHTGBM" and attrs["TrainingMode"] == "FULL_RETRAIN"


def test_history_replays_on_the_current_code(settings, completed):
    from tests.helpers import temporal
    from tests.workflows.test_replay import replay

    async def history(client):
        return await client.get_workflow_handle(completed["job_id"]).fetch_history()

    replay(temporal(settings, history))

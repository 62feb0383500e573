"""Bad input: a 422 naming the field, or a FAILED job with a reason — never a stack trace or a hang."""

from __future__ import annotations

import json

import pytest
import redis

from tests.helpers import error_fields, unique, wait_for


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"model_type": "CATBOOST"}, "model_type", "XGBOOST"),
        ({"training_mode": "SOMETIMES"}, "training_mode", "FULL_RETRAIN"),
        (
            {"dataset_config": {"training_period": "2024-13-01/2024-06-30"}},
            "dataset_config.training_period",
            "ISO-8601",
        ),
        (
            {"dataset_config": {"validation_period": "2025-03-31/2025-01-01"}},
            "dataset_config.validation_period",
            "empty",
        ),
        ({"dataset_config": {"test_period": "2024-06-01/2024-06-30"}}, "dataset_config", "overlap"),
        (
            {"hyperparameter_config": {"optimization_timeout": "soon"}},
            "hyperparameter_config.optimization_timeout",
            "duration",
        ),
        ({"training_mode": "INCREMENTAL"}, "training_mode", "not supported yet"),
        (
            {
                "model_type": "ENSEMBLE",
                "hyperparameter_config": {
                    "search_space": {"num_leaves": {"type": "int", "low": 8, "high": 64}}
                },
            },
            "hyperparameter_config.search_space",
            "ENSEMBLE",
        ),
        (
            {
                "model_type": "LSTM",
                "dataset_config": {
                    "timestamp_column": None,
                    "training_period": None,
                    "validation_period": None,
                    "test_period": None,
                },
            },
            "body",
            "timestamp_column",
        ),
        (
            {
                "hyperparameter_config": {
                    "search_space": {"leraning_rate": {"type": "float", "low": 0.1, "high": 0.1}}
                }
            },
            "hyperparameter_config.search_space.leraning_rate",
            "leraning_rate",
        ),
    ],
)
def test_invalid_request_is_422_naming_the_field(api, demo_request, change, field, words):
    resp = api.post("/api/v1/training/start", json=demo_request(unique("bad"), **change))
    assert resp.status_code == 422, resp.text
    assert field in error_fields(resp)
    assert words in resp.json()["message"]


def test_missing_body_fields_are_named(api):
    resp = api.post(
        "/api/v1/training/start", json={"model_type": "LIGHTGBM", "dataset_config": {"source": "x"}}
    )
    assert resp.status_code == 422
    assert "dataset_config.target" in error_fields(resp)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"dataset_config": {"source": "nonexistent/data.parquet"}},  # under the first data root
            "dataset_config.source: no file matches",
        ),
        (
            {"dataset_config": {"target": "will_churn"}},
            "dataset_config.target: column 'will_churn' not in the data",
        ),
        (
            {
                "dataset_config": {
                    "training_period": "2019-01-01/2019-12-31",
                    "validation_period": "2020-01-01/2020-03-31",
                    "test_period": "2020-04-01/2020-06-30",
                }
            },
            "dataset_config.training_period",
        ),
    ],
)
def test_bad_data_fails_the_job_with_a_reason(api, settings, demo_request, change, words):
    job_id = unique("fails")
    assert api.post("/api/v1/training/start", json=demo_request(job_id, **change)).status_code == 202
    job = wait_for(api, job_id, timeout=60)
    assert job["status"] == "FAILED"
    assert words in job["error"]
    # Consumers hear of it: one model_training_failed event with the stage and the reason.
    cache = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    failed = [
        json.loads(f["payload"])["training_failed"]
        for _, f in cache.xrange("pmls:events")
        if f["event_type"] == "model_training_failed" and job_id in f["payload"]
    ]
    assert len(failed) == 1 and failed[0]["training_job_id"] == job_id, failed
    assert failed[0]["error"] == job["error"] and failed[0]["stage"] == job["current_stage"]

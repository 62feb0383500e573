"""Bounded requests on the real API: oversized, overflowing or non-finite input is a 4xx that names the field,
and leaves no job behind."""

from __future__ import annotations

import json

import pytest

from tests.helpers import error_fields, unique

HUGE = {"type": "int", "low": 10, "high": 1_000_000_000}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"training_id": "j" * 65}, "training_id", "pattern"),
        ({"model_name": "m" * 65}, "model_name", "pattern"),
        (
            {"hyperparameter_config": {"optimization_timeout": "999999999d"}},
            "hyperparameter_config.optimization_timeout",
            "at most 7 days",
        ),
        (
            {"hyperparameter_config": {"optimization_timeout": "P8D"}},
            "hyperparameter_config.optimization_timeout",
            "at most 7 days",
        ),
        ({"job_timeout": "99999999999d"}, "job_timeout", "too long"),
        ({"dataset_config": {"gap": "P3650D"}}, "dataset_config.gap", "at most 7 days"),
        (
            {"dataset_config": {"test_period": "2025-07-01/9999-12-31"}},
            "dataset_config.test_period",
            "representable",
        ),
        (
            {"hyperparameter_config": {"search_space": {"n_estimators": HUGE}}},
            "hyperparameter_config.search_space",
            "n_estimators is at most 10000",
        ),
        (
            {
                "model_type": "NEURAL_NETWORK",
                "hyperparameter_config": {
                    "search_space": {"hidden_size": {"type": "categorical", "choices": [64, 10**9]}}
                },
            },
            "hyperparameter_config.search_space",
            "hidden_size is at most 4096",
        ),
        ({"dataset_config": {"features": ["x"] * 10_001}}, "dataset_config.features", "at most 10000"),
        ({"dataset_config": {"target": "t" * 257}}, "dataset_config.target", "at most 256"),
    ],
)
def test_out_of_bounds_values_are_422_and_start_nothing(api, demo_request, change, field, words):
    body = demo_request(unique("bound"), **change)
    resp = api.post("/api/v1/training/start", json=body)
    assert resp.status_code == 422, resp.text
    assert field in error_fields(resp)
    assert words in resp.json()["message"]
    if len(body["training_id"]) <= 64:
        assert api.get(f"/api/v1/training/{body['training_id']}/status").status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"deployment_config": {"min_improvement": float("nan")}}, "deployment_config.min_improvement"),
        (
            {
                "hyperparameter_config": {
                    "search_space": {"learning_rate": {"low": 0.01, "high": float("inf")}}
                }
            },
            "hyperparameter_config.search_space.learning_rate.high",
        ),
    ],
)
def test_nan_and_infinity_are_refused(api, demo_request, change, field):
    body = json.dumps(demo_request(unique("nan"), **change))  # Python writes NaN / Infinity literals
    assert "NaN" in body or "Infinity" in body
    resp = api.post("/api/v1/training/start", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert field in error_fields(resp)


def test_a_body_over_the_limit_is_413_declared_or_streamed(api, demo_request):
    body = demo_request(unique("big"))
    body["dataset_config"]["features"] = ["f" * 200] * 6000  # ~1.2 MB
    raw = json.dumps(body).encode()
    resp = api.post("/api/v1/training/start", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "at most 1048576 bytes" in resp.json()["message"]

    def chunks():  # no Content-Length: refused once the streamed body passes the limit
        for i in range(0, len(raw), 64 * 1024):
            yield raw[i : i + 64 * 1024]

    resp = api.post("/api/v1/training/start", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert api.get(f"/api/v1/training/{body['training_id']}/status").status_code == 404


def test_a_long_target_gives_a_lineage_whose_model_ids_fit(demo_request):
    from pmls.contracts import TrainingRequest
    from pmls.contracts.ids import model_id

    body = demo_request("long_target")
    del body["model_name"]
    names = set()
    for suffix in ("a", "b"):
        body["dataset_config"]["target"] = "x" * 200 + suffix
        lineage = TrainingRequest.model_validate(body).lineage
        assert len(model_id(lineage, "NEURAL_NETWORK", "99999")) <= 100
        names.add(lineage)
    assert len(names) == 2  # two long targets that share a prefix are two lineages

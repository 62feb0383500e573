"""Champion comparison across jobs of one lineage, on the same test period."""

from __future__ import annotations

import pytest

from tests.helpers import unique, wait_for


def train(api, demo_request, lineage: str, validation_config: dict | None = None, **hp) -> tuple[dict, dict]:
    job_id = unique("champ")
    body = demo_request(job_id, model_name=lineage)
    body["hyperparameter_config"] = {"optimization_method": "none", **hp}
    body["validation_config"] = validation_config or {}
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, job_id, timeout=240)
    assert job["status"] == "COMPLETED", job.get("error")
    return job, api.get(f"/api/v1/models/artifacts/{job['model_id']}").json()


def test_new_versions_are_compared_with_the_champion(api, demo_request):
    lineage = unique("lineage")
    # Every job of this test has the same test period: the first version is kept off it (no refit on every
    # row), so that later versions can be compared with it on rows neither was fitted on.
    _, first = train(api, demo_request, lineage, validation_config={"refit_full": False})
    assert first["performance_metrics"]["fitted_on"] == ["train", "validation"]
    assert first["performance_metrics"]["champion_model_id"] is None  # the first version says so
    assert first["performance_metrics"]["performance_improvement"] is None
    assert first["performance_metrics"]["cv_mean"] is not None

    # A deliberately weak second version: a few shallow trees.
    _, second = train(
        api,
        demo_request,
        lineage,
        search_space={
            "num_boost_round": {"type": "int", "low": 3, "high": 3},
            "num_leaves": {"type": "int", "low": 2, "high": 2},
        },
    )
    perf = second["performance_metrics"]
    assert perf["fitted_on"] == ["train", "validation", "test"]  # the default: every row
    assert perf["test_metrics_fitted_on"] == ["train", "validation"]
    assert perf["champion_model_id"] == first["model_id"]  # no deployment yet: the latest version is champion
    expected = perf["test"]["roc_auc"] - first["performance_metrics"]["test"]["roc_auc"]
    assert perf["performance_improvement"] == pytest.approx(expected, abs=1e-9)
    assert perf["performance_improvement"] < 0
    assert second["deployment_ready"] is False  # worse than the champion

    # Once the first version is deployed it is the champion, whatever was registered after it.
    assert api.post(f"/api/v1/models/deploy/{first['model_id']}", json={}).status_code == 200
    _, third = train(api, demo_request, lineage)
    assert third["performance_metrics"]["champion_model_id"] == first["model_id"]
    assert third["performance_metrics"]["performance_improvement"] == pytest.approx(0.0, abs=0.02)

    # A champion fitted on this job's whole test period cannot be judged on it: no figure, and a note why.
    # Worse than its champion, so not deployment_ready: an operator forces it past the gate.
    forced = api.post(f"/api/v1/models/deploy/{second['model_id']}", json={"force": True})
    assert forced.status_code == 200 and forced.json()["forced"] is True, forced.text
    _, fourth = train(api, demo_request, lineage)
    assert fourth["performance_metrics"]["champion_model_id"] == second["model_id"]
    assert fourth["performance_metrics"]["performance_improvement"] is None

"""An ENSEMBLE search follows its leaders: trailing families are stopped, their time goes to the others."""

from __future__ import annotations

import polars as pl
from sklearn.datasets import load_breast_cancer

from tests.helpers import unique, wait_for


def test_trailing_families_are_stopped_and_the_allocation_is_recorded(api, tmp_path):
    data = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.replace(" ", "_"))
    source = tmp_path / "cancer.parquet"
    pl.from_pandas(data).write_parquet(source)
    job_id = unique("leaders")
    body = {
        "training_id": job_id,
        "model_type": "ENSEMBLE",
        "model_name": unique("leaders"),
        "dataset_config": {"source": str(source), "target": "target"},
        "hyperparameter_config": {"optimization_trials": 10000, "optimization_timeout": "45s"},
        "validation_config": {"cv_folds": 3},
        "random_seed": 3,
    }
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, job_id, timeout=300)
    assert job["status"] == "COMPLETED", job.get("error")

    allocation = job["training_metrics"]["search_allocation"]
    assert set(allocation) == {"LIGHTGBM", "XGBOOST", "RANDOM_FOREST", "NEURAL_NETWORK"}
    assert all(a["completed"] >= 1 for a in allocation.values())  # every family finished a trial
    outpaced = {f: a for f, a in allocation.items() if a["stopped_by"] == "outpaced"}
    leaders = {f: a for f, a in allocation.items() if a["stopped_by"] != "outpaced"}
    # At a third of the time the trailing half stops (never fewer than two families go on).
    assert len(outpaced) == 2 and len(leaders) == 2, allocation
    for a in outpaced.values():
        assert 15 <= a["stopped_at_seconds"] < 45 and "trailed the leader" in a["reason"]
    assert all(a["final_slots"] >= 1 for a in leaders.values())
    trials = {t["model_type"] for t in api.get(f"/api/v1/training/{job_id}/trials").json()}
    assert trials == set(allocation)

"""Every model family completes a job through the API, for a binary, a multiclass and a regression target."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.helpers import unique, wait_for

FAMILIES = ["XGBOOST", "LIGHTGBM", "RANDOM_FOREST", "NEURAL_NETWORK", "LSTM"]
TARGETS = {"binary": "y_bin", "multiclass": "y_multi", "regression": "y_reg"}
FEATURES = ["f1", "f2", "f3", "segment"]
# Small, fixed settings keep each job to seconds; single-point ranges fix a parameter.
FAST = {
    "XGBOOST": {"num_boost_round": 200},
    "LIGHTGBM": {"num_boost_round": 200},
    "RANDOM_FOREST": {"n_estimators": 60},
    "NEURAL_NETWORK": {"max_epochs": 40},
    "LSTM": {"max_epochs": 40},
}


def make_series(path: Path, entities: int = 24, steps: int = 40, seed: int = 3) -> Path:
    """Entities observed daily; each target depends on today's features and on yesterday's f1."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(entities):
        level, prev = rng.normal(), 0.0
        for t in range(steps):
            f1 = 0.7 * prev + rng.normal()
            f2, f3 = rng.normal(), rng.normal()
            segment = ["a", "b", "c"][(e + t) % 3]
            signal = 1.5 * f1 + 0.8 * prev - f2 + 0.5 * level + (segment == "a")
            rows.append(
                {
                    "day": datetime(2025, 1, 1) + timedelta(days=t),
                    "entity": f"e{e}",
                    "f1": f1,
                    "f2": f2,
                    "f3": f3,
                    "segment": segment,
                    "y_bin": int(signal + rng.normal(scale=0.5) > 0),
                    "y_multi": int(np.digitize(signal + rng.normal(scale=0.5), [-1.0, 1.0])),
                    "y_reg": float(signal + rng.normal(scale=0.5)),
                }
            )
            prev = f1
    pl.DataFrame(rows).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def jobs(api, tmp_path_factory) -> dict[tuple[str, str], dict]:
    data = make_series(tmp_path_factory.mktemp("series") / "series.parquet")
    started = {}
    for family in FAMILIES:
        for task, target in TARGETS.items():
            job_id = unique(f"{family.lower()}_{task}")
            space = {k: {"type": "int", "low": v, "high": v} for k, v in FAST[family].items()}
            body = {
                "training_id": job_id,
                "model_type": family,
                "model_name": f"series_{task}",
                "dataset_config": {
                    "source": str(data),
                    "target": target,
                    "task": task,
                    "features": FEATURES,
                    "timestamp_column": "day",
                    "entity_column": "entity",
                    "sequence_length": 5,
                    "training_period": "2025-01-01/2025-01-28",
                    "validation_period": "2025-01-29/2025-02-03",
                    "test_period": "2025-02-04/2025-02-09",
                },
                "hyperparameter_config": {"optimization_method": "none", "search_space": space},
                "validation_config": {"cv_folds": 3},
            }
            resp = api.post("/api/v1/training/start", json=body)
            assert resp.status_code == 202, resp.text
            started[(family, task)] = job_id
    return {key: wait_for(api, job_id, timeout=600) for key, job_id in started.items()}


@pytest.mark.parametrize("task", list(TARGETS))
@pytest.mark.parametrize("family", FAMILIES)
def test_family_completes_with_real_metrics(api, jobs, family, task):
    job = jobs[(family, task)]
    assert job["status"] == "COMPLETED", job.get("error")
    metrics = job["training_metrics"]
    assert len(metrics["cross_validation_scores"]) == 3
    test = metrics["test_metrics"]
    if task == "binary":
        assert test["roc_auc"] > 0.75
    elif task == "multiclass":
        assert test["accuracy"] > 0.5  # three classes: chance is about 0.33
    else:
        assert test["r2"] > 0.4
    artifact = api.get(f"/api/v1/models/artifacts/{job['model_id']}").json()
    assert artifact["model_type"] == family
    assert artifact["performance_metrics"]["test"] == test

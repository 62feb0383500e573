"""An ENSEMBLE job on time-ordered series: a tuned portfolio (LSTM included), an ensemble chosen on validation."""

from __future__ import annotations

import json

import mlflow
import pandas as pd

from tests.api.test_families import FEATURES, make_series
from tests.helpers import unique, wait_for


def test_ensemble_job_completes_with_its_members_and_plots(api, settings, tmp_path):
    data = make_series(tmp_path / "series.parquet")
    job_id = unique("ensemble")
    body = {
        "training_id": job_id,
        "model_type": "ENSEMBLE",
        "model_name": "series_ensemble",
        "dataset_config": {
            "source": str(data),
            "target": "y_bin",
            "features": FEATURES,
            "timestamp_column": "day",
            "entity_column": "entity",
            "sequence_length": 5,
            "training_period": "2025-01-01/2025-01-28",
            "validation_period": "2025-01-29/2025-02-03",
            "test_period": "2025-02-04/2025-02-09",
        },
        "hyperparameter_config": {
            "optimization_method": "tpe",
            "optimization_trials": 10,
            "optimization_timeout": "4m",
        },
        "validation_config": {"cv_folds": 3, "bag_folds": 3},
    }
    assert api.post("/api/v1/training/start", json=body).status_code == 202
    job = wait_for(api, job_id, timeout=600)
    assert job["status"] == "COMPLETED", job.get("error")
    assert job["training_metrics"]["test_metrics"]["roc_auc"] > 0.75
    families = {t["model_type"] for t in api.get(f"/api/v1/training/{job_id}/trials").json()}
    assert families == {"LIGHTGBM", "XGBOOST", "RANDOM_FOREST", "NEURAL_NETWORK", "LSTM"}
    artifact = api.get(f"/api/v1/models/artifacts/{job['model_id']}").json()
    assert artifact["model_type"] == "ENSEMBLE"

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    client = mlflow.MlflowClient()
    run_id = client.get_model_version("series_ensemble", artifact["version"]).run_id
    ensemble = json.loads(open(client.download_artifacts(run_id, "ensemble.json", str(tmp_path))).read())
    assert ensemble["method"] in {"single", "caruana", "blend", "stack"}
    assert ensemble["bag_folds"] == 3  # every chosen member served as a bag of three models
    assert len(ensemble["candidates"]) == 5
    scores = ensemble["heldout_scores"]  # every method on the held-out rows (OOF + validation), cross-fitted
    assert scores[ensemble["method"]] >= max(scores.values()) - 1e-12  # the winner there (roc_auc)
    assert set(ensemble["validation_scores"]) == set(scores)  # the validation period alone, as a check
    assert ensemble["heldout_rows"] > job["training_metrics"].get("validation_rows", 0)
    assert "plots/optimization_history.png" in {a.path for a in client.list_artifacts(run_id, "plots")}

    model = mlflow.pyfunc.load_model(f"models:/series_ensemble/{artifact['version']}")
    out = model.predict(pd.read_parquet(data).drop(columns=["y_bin", "y_multi", "y_reg"]))
    assert list(out.columns) == ["prediction", "proba_0", "proba_1"]

"""No code from the registry: a registered model holds no pickle, and the service loads a version only through its
own bundle loader after the bundle's content hash matched the one recorded in PostgreSQL at registration."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from pmls.ml.bundle import bundle_digest
from tests.api.test_champion import train
from tests.helpers import mlflow_runs, unique


def _bundles(root: Path) -> list[Path]:
    return [p.parent for p in root.rglob("meta.json") if (p.parent / "preprocessor.json").is_file()]


def test_a_registered_model_is_code_and_safe_files_and_a_tampered_one_is_not_loaded(
    api, demo_request, settings
):
    lineage = unique("trusted")
    first_job, first = train(api, demo_request, lineage, validation_config={"refit_full": False})
    recorded = first["bundle_sha256"]
    assert recorded and len(recorded) == 64

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{lineage}/{first['version']}", dst_path=tmp)
        )
        assert not list(local.rglob("*.pkl"))  # models from code: no cloudpickle of the model object
        assert "model_code_path" in (local / "MLmodel").read_text()
        (bundle,) = _bundles(local)
        assert bundle_digest(bundle) == recorded

    # Whoever can write to the registry's artifact store changes the champion's bundle...
    stored = [b for b in _bundles(settings.home / "mlartifacts") if bundle_digest(b) == recorded]
    assert stored, "the registered bundle is in the embedded MLflow's artifact store"
    for directory in stored:
        with (directory / "preprocessor.json").open("a") as f:
            f.write(" ")
    # ... and the next version of the lineage does not load it: no comparison, a note that says why.
    second_job, second = train(api, demo_request, lineage)
    assert second["performance_metrics"]["champion_model_id"] == first["model_id"]
    assert second["performance_metrics"]["performance_improvement"] is None
    parent, _ = mlflow_runs(settings, second_job["job_id"])
    assert (
        "not the" in parent.data.tags["pmls.champion_note"]
        and "not loaded" in parent.data.tags["pmls.champion_note"]
    )

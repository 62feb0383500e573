"""A fitted model as a bundle directory and as an MLflow pyfunc model that serves raw rows."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from pmls.contracts import DatasetConfig, ModelType, ValidationConfig
from pmls.ml.bundle import Bundle, load_bundle, save_bundle
from pmls.ml.data import prepare_splits
from pmls.ml.final import fit_final
from pmls.ml.fitting import FitOptions
from pmls.ml.prepared import prepare
from pmls.storage.pyfunc import log_pyfunc_model, pip_requirements


@pytest.fixture
def trained(frame):
    df = frame.with_columns(pl.col("y").replace_strict({0: "stay", 1: "go"}))
    cfg = DatasetConfig(source="mem.parquet", target="y", timestamp_column="ts")
    splits = prepare_splits(df, cfg, seed=0)
    prepared = prepare(splits, cfg, ValidationConfig(cv_strategy="none"), seed=0)
    final = fit_final(prepared, FitOptions.from_config(cfg, ModelType.LIGHTGBM, {}, seed=0, num_threads=1))
    return cfg, prepared, final, splits.test.drop("y").to_pandas()


def save(tmp_path, trained) -> Path:
    cfg, prepared, final, _ = trained
    return save_bundle(
        tmp_path / "bundle", final=final, prepared=prepared, cfg=cfg, model_type=ModelType.LIGHTGBM, params={}
    )


def in_memory(trained) -> Bundle:
    """The bundle as it was before saving: what the service predicted with at fit time."""
    cfg, prepared, final, _ = trained
    return Bundle(
        preprocessor=prepared.preprocessor,
        model=final.model,
        model_type=ModelType.LIGHTGBM,
        task=prepared.task,
        classes=prepared.classes,
        metric=prepared.metric,
        kept=prepared.kept,
        seq_len=final.seq_len,
        timestamp_column=cfg.timestamp_column,
        params={},
    )


@pytest.fixture
def tracking(settings):
    """The stack's MLflow server (embedded unless PMLS_MLFLOW_TRACKING_URI is set), a fresh experiment."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    experiment = mlflow.create_experiment(f"pmls-test-serving-{uuid.uuid4().hex[:8]}")
    yield settings.mlflow.tracking_uri, experiment
    mlflow.set_tracking_uri(previous)


def test_bundle_round_trip(tmp_path, trained):
    _, prepared, final, raw = trained
    directory = save(tmp_path, trained)
    assert {p.name for p in directory.iterdir()} == {"preprocessor.json", "model", "meta.json"}
    assert {p.name for p in (directory / "model").iterdir()} == {"meta.json", "model.txt"}
    bundle = load_bundle(directory)
    out = bundle.predict(raw)
    pd.testing.assert_frame_equal(out, in_memory(trained).predict(raw))
    # Raw rows through the bundle score exactly as the prepared test matrix did at fit time.
    np.testing.assert_array_equal(
        out[["proba_go", "proba_stay"]].to_numpy(), final.model.predict_proba(prepared.X["test"])
    )
    assert bundle.classes == ["go", "stay"] and bundle.metric == "roc_auc"
    assert (
        bundle.model_type is ModelType.LIGHTGBM
        and bundle.model.best_iteration_ == final.model.best_iteration_
    )


def test_pip_requirements_are_exact_pins():
    pins = pip_requirements(ModelType.LIGHTGBM)
    assert any(p.startswith("lightgbm==") for p in pins) and all("==" in p for p in pins)


def test_pyfunc_round_trip_on_raw_rows(tmp_path, trained, tracking):
    *_, raw = trained
    bundle_dir = save(tmp_path, trained)
    bundle = load_bundle(bundle_dir)
    with mlflow.start_run(experiment_id=tracking[1]):
        info = log_pyfunc_model(bundle, bundle_dir, raw.head(20))
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    out = loaded.predict(raw)
    assert list(out.columns) == ["prediction", "proba_go", "proba_stay"] and len(out) == len(raw)
    assert raw["colour"].dtype != np.float64  # the raw string category travels as is
    expected = in_memory(trained).predict(raw)
    np.testing.assert_allclose(out["proba_go"], expected["proba_go"], rtol=1e-6)
    assert out["prediction"].tolist() == expected["prediction"].tolist()
    assert not (tmp_path / "mlruns").exists()  # artifacts went to the server, not a CWD-relative ./mlruns


CHILD = textwrap.dedent("""
    import sys
    # Hide the editable install of pmls: the model must bring its own copy of the code.
    sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    try:
        import pmls  # noqa: F401
        raise SystemExit("pmls is still importable")
    except ImportError:
        pass
    import mlflow, pandas as pd
    mlflow.set_tracking_uri(sys.argv[1])
    rows = pd.read_parquet(sys.argv[3])
    out = mlflow.pyfunc.load_model(sys.argv[2]).predict(rows)
    assert "site-packages" not in sys.modules["pmls"].__file__, sys.modules["pmls"].__file__
    print(",".join(out.columns), len(out))
""")


def test_pyfunc_loads_without_pmls_installed(tmp_path, trained, tracking):
    *_, raw = trained
    bundle_dir = save(tmp_path, trained)
    with mlflow.start_run(experiment_id=tracking[1]):
        info = log_pyfunc_model(load_bundle(bundle_dir), bundle_dir, raw.head(20))
    raw.to_parquet(tmp_path / "rows.parquet")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, tracking[0], info.model_uri, str(tmp_path / "rows.parquet")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"prediction,proba_go,proba_stay {len(raw)}"

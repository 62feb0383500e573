from __future__ import annotations

import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from pmls.contracts import DatasetConfig, ModelType
from pmls.ml.data import prepare_splits
from pmls.ml.serving import load_bundle, log_pyfunc_model, save_bundle
from pmls.ml.training import predict_frame, train_model


@pytest.fixture
def trained(frame):
    df = frame.with_columns(pl.col("y").replace_strict({0: "stay", 1: "go"}))
    cfg = DatasetConfig(source="mem.parquet", target="y", timestamp_column="ts")
    splits = prepare_splits(df, cfg, seed=0)
    model = train_model(splits, cfg, ModelType.LIGHTGBM, seed=0, params={"num_threads": 1})
    return model, splits.test.drop("y").to_pandas()


@pytest.fixture
def tracking(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("pmls-test", artifact_location=str(tmp_path / "artifacts"))
    yield uri, experiment
    mlflow.set_tracking_uri(previous)


def test_bundle_round_trip(tmp_path, trained):
    model, raw = trained
    directory = save_bundle(model, tmp_path / "bundle")
    assert {p.name for p in directory.iterdir()} == {"preprocessor.json", "model.txt", "meta.json"}
    bundle = load_bundle(directory)
    expected = predict_frame(model.preprocessor, model.booster, model.task, model.classes, raw)
    pd.testing.assert_frame_equal(bundle.predict(raw), expected)
    assert bundle.classes == ["go", "stay"] and bundle.best_iteration == model.best_iteration


def test_pyfunc_round_trip_on_raw_rows(tmp_path, trained, tracking):
    model, raw = trained
    bundle_dir = save_bundle(model, tmp_path / "bundle")
    with mlflow.start_run(experiment_id=tracking[1]):
        info = log_pyfunc_model(model, bundle_dir, raw.head(20))
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    out = loaded.predict(raw)
    assert list(out.columns) == ["prediction", "proba_go", "proba_stay"] and len(out) == len(raw)
    assert raw["colour"].dtype != np.float64  # the raw string category travels as is
    expected = predict_frame(model.preprocessor, model.booster, model.task, model.classes, raw)
    np.testing.assert_allclose(out["proba_go"], expected["proba_go"], rtol=1e-6)
    assert out["prediction"].tolist() == expected["prediction"].tolist()
    assert (tmp_path / "artifacts").exists()  # nothing went to a CWD-relative ./mlruns


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
    model, raw = trained
    with mlflow.start_run(experiment_id=tracking[1]):
        info = log_pyfunc_model(model, save_bundle(model, tmp_path / "bundle"), raw.head(20))
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

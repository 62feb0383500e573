from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from pmls.contracts import DatasetConfig, ModelType, Task
from pmls.ml.data import load_source, prepare_splits
from pmls.ml.demo_data import DEMO_PERIODS, generate_demo_dataset
from pmls.ml.errors import DataError
from pmls.ml.lightgbm_model import train_lightgbm
from pmls.ml.training import predict_frame, train_model

# Tiny data trains fastest on one thread, and OpenMP spinning makes a busy machine very slow otherwise.
ONE_THREAD = {"num_threads": 1}


def sklearn_frame(loader) -> pl.DataFrame:
    data = loader(as_frame=True)
    return pl.from_pandas(data.frame.rename(columns={data.target.name: "label"}))


def fit(df: pl.DataFrame, **kw):
    cfg = DatasetConfig(source="mem.parquet", target="label", **kw)
    splits = prepare_splits(df, cfg, seed=0)
    return splits, train_model(splits, cfg, ModelType.LIGHTGBM, seed=0, params=ONE_THREAD)


def test_breast_cancer_binary():
    splits, model = fit(sklearn_frame(load_breast_cancer))
    assert splits.task is Task.BINARY and model.primary_metric == "roc_auc"
    assert model.metrics.test_metrics["roc_auc"] > 0.95
    importance = model.metrics.feature_importance
    assert 0 < len(importance) <= 50 and abs(sum(importance.values()) - 1) < 0.05
    assert all(type(v) is float for v in importance.values())
    assert model.metrics.cross_validation_scores == []
    json.dumps(model.metrics.model_dump())  # plain floats all the way down
    json.dumps(model.params)


def test_wine_multiclass():
    splits, model = fit(sklearn_frame(load_wine))
    assert splits.task is Task.MULTICLASS and model.classes == [0, 1, 2]
    assert model.metrics.test_metrics["accuracy"] > 0.85
    assert model.metrics.validation_loss == model.metrics.validation_metrics["log_loss"]


def test_diabetes_regression():
    # 66 test rows make one split's R2 noisy (0.26..0.46 across seeds): judge the mean of five splits.
    df = sklearn_frame(load_diabetes)
    cfg = DatasetConfig(source="mem.parquet", target="label")
    scores = []
    for seed in range(5):
        splits = prepare_splits(df, cfg, seed=seed)
        model = train_model(splits, cfg, ModelType.LIGHTGBM, seed=seed, params=ONE_THREAD)
        scores.append(model.metrics.test_metrics["r2"])
    assert splits.task is Task.REGRESSION and model.classes is None
    assert np.mean(scores) > 0.3 and min(scores) > 0.2
    assert model.metrics.validation_loss == model.metrics.validation_metrics["rmse"]
    assert model.metrics.validation_accuracy == model.metrics.validation_metrics["r2"]


def test_predict_frame_labels_and_probabilities(frame):
    df = frame.with_columns(pl.col("y").replace_strict({0: "stay", 1: "go"}).alias("label")).drop("y")
    splits, model = fit(df)
    out = predict_frame(
        model.preprocessor, model.booster, model.task, model.classes, splits.test.drop("label").to_pandas()
    )
    assert list(out.columns) == ["prediction", "proba_go", "proba_stay"]
    assert set(out["prediction"]) <= {"go", "stay"}
    np.testing.assert_allclose(out[["proba_go", "proba_stay"]].sum(axis=1), 1.0)


def test_unsupported_model_type(frame):
    cfg = DatasetConfig(source="mem.parquet", target="y")
    with pytest.raises(DataError, match="not supported yet") as info:
        train_model(prepare_splits(frame, cfg, seed=0), cfg, ModelType.XGBOOST)
    assert info.value.field == "model_type"


def _arrays(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] + rng.normal(scale=2.0, size=n) > 0).astype(int)
    return X, y


def test_callback_runs_every_round():
    X, y = _arrays()
    calls = []
    booster = train_lightgbm(
        X[:200],
        y[:200],
        X[200:],
        y[200:],
        task=Task.BINARY,
        num_classes=None,
        categorical_features=[],
        params={"num_boost_round": 30, "early_stopping_rounds": 1000, "num_threads": 1},
        callbacks=[lambda i, total: calls.append((i, total))],
    )
    assert calls == [(i, 30) for i in range(1, 31)]
    assert 1 <= booster.best_iteration <= 30


def test_exception_in_callback_stops_training():
    X, y = _arrays()
    seen = []

    def stop(iteration, total):
        seen.append(iteration)
        if iteration == 5:
            raise KeyboardInterrupt("cancelled")  # not an Exception subclass: must still propagate

    with pytest.raises(KeyboardInterrupt):
        train_lightgbm(
            X[:200],
            y[:200],
            X[200:],
            y[200:],
            task=Task.BINARY,
            num_classes=None,
            categorical_features=[],
            params={"num_threads": 1},
            callbacks=[stop],
        )
    assert seen == [1, 2, 3, 4, 5]


def test_demo_dataset_is_learnable(tmp_path):
    path = generate_demo_dataset(tmp_path / "churn.parquet", rows_per_day=20)
    df = load_source(str(path))
    assert 0.2 <= df["churned"].mean() <= 0.3
    cfg = DatasetConfig(
        source=str(path),
        target="churned",
        timestamp_column="event_time",
        entity_column="customer_id",
        **DEMO_PERIODS,
    )
    splits = prepare_splits(df, cfg, seed=0)
    model = train_model(splits, cfg, ModelType.LIGHTGBM, seed=0, params=ONE_THREAD)
    assert "customer_id" not in model.preprocessor.feature_names_  # the entity is not a feature
    assert model.metrics.test_metrics["roc_auc"] > 0.75

"""Fit a model on prepared splits and score it; predict with a fitted model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from pmls.contracts import DatasetConfig, ModelType, Task, TrainingMetrics
from pmls.ml.data import Splits
from pmls.ml.errors import DataError
from pmls.ml.lightgbm_model import lightgbm_params, train_lightgbm
from pmls.ml.metrics import PRIMARY_METRIC, compute_metrics
from pmls.ml.preprocess import Preprocessor

TOP_IMPORTANCES = 50


@dataclass
class TrainedModel:
    preprocessor: Preprocessor
    booster: lgb.Booster
    task: Task
    classes: list | None
    primary_metric: str
    metrics: TrainingMetrics
    best_iteration: int
    params: dict


def _feature_list(splits: Splits, cfg: DatasetConfig) -> list[str] | None:
    if cfg.features is not None:
        return list(cfg.features)
    if cfg.entity_column:
        # An entity id identifies rows, it does not describe them: as a feature it only memorises.
        return [c for c in splits.train.columns if c not in (cfg.target, cfg.entity_column)]
    return None


def _predict_raw(booster: lgb.Booster, task: Task, X: np.ndarray) -> np.ndarray:
    """Class probabilities (n x k) for classification, values for regression."""
    raw = booster.predict(X)
    if task is Task.BINARY:
        return np.column_stack([1.0 - raw, raw])
    return raw


def _importance(booster: lgb.Booster, names: list[str]) -> dict[str, float]:
    gain = booster.feature_importance(importance_type="gain")  # best iteration when there is one
    total = float(np.sum(gain))
    if total <= 0:
        return {}
    ranked = sorted(zip(names, gain, strict=True), key=lambda item: -item[1])[:TOP_IMPORTANCES]
    return {name: float(value) / total for name, value in ranked}


def _training_metrics(
    model_parts: dict[str, dict[str, float]], task: Task, importance: dict
) -> TrainingMetrics:
    accuracy = "r2" if task is Task.REGRESSION else "accuracy"
    loss = "rmse" if task is Task.REGRESSION else "log_loss"
    train, valid = model_parts["train"], model_parts["validation"]
    return TrainingMetrics(
        training_accuracy=train.get(accuracy),
        validation_accuracy=valid.get(accuracy),
        training_loss=train.get(loss),
        validation_loss=valid.get(loss),
        feature_importance=importance,
        cross_validation_scores=[],
        validation_metrics=valid,
        test_metrics=model_parts["test"],
    )


def train_model(
    splits: Splits,
    cfg: DatasetConfig,
    model_type: ModelType,
    *,
    params: dict | None = None,
    seed: int = 0,
    callbacks: Sequence[Callable[[int, int], None]] = (),
) -> TrainedModel:
    """Fit the preprocessor on train, boost with early stopping on validation, score every split."""
    if model_type is not ModelType.LIGHTGBM:
        raise DataError("model_type", f"{model_type} is not supported yet; use LIGHTGBM")
    prep = Preprocessor(
        cfg.target, splits.task, cfg.timestamp_column, _feature_list(splits, cfg), classes=splits.classes
    ).fit(splits.train)
    frames = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    X = {name: prep.transform(frame) for name, frame in frames.items()}
    y = {name: prep.encode_target(frame) for name, frame in frames.items()}
    num_classes = len(prep.classes_) if prep.classes_ is not None else None
    booster = train_lightgbm(
        X["train"],
        y["train"],
        X["validation"],
        y["validation"],
        task=splits.task,
        num_classes=num_classes,
        categorical_features=prep.categorical_indices_,
        params=params,
        seed=seed,
        callbacks=callbacks,
    )
    scores = {
        name: compute_metrics(splits.task, y[name], _predict_raw(booster, splits.task, X[name]))
        for name in frames
    }
    metrics = _training_metrics(scores, splits.task, _importance(booster, prep.feature_names_))
    best = int(booster.best_iteration or booster.current_iteration())
    return TrainedModel(
        prep,
        booster,
        splits.task,
        prep.classes_,
        PRIMARY_METRIC[splits.task],
        metrics,
        best,
        lightgbm_params(splits.task, num_classes, params, seed),
    )


def predict_frame(
    preprocessor: Preprocessor, booster: lgb.Booster, task: Task, classes: list | None, frame: Any
) -> pd.DataFrame:
    """Predictions for raw rows: ``prediction`` (original labels / values), plus ``proba_<class>``."""
    raw = _predict_raw(booster, task, preprocessor.transform(frame))
    index = frame.index if isinstance(frame, pd.DataFrame) else None
    if task is Task.REGRESSION:
        return pd.DataFrame({"prediction": raw.astype(np.float64)}, index=index)
    labels = np.asarray(classes, dtype=object)[raw.argmax(axis=1)]
    out = pd.DataFrame({"prediction": pd.Series(labels.tolist(), index=index)})
    for k, label in enumerate(classes):
        out[f"proba_{label}"] = raw[:, k].astype(np.float64)
    return out

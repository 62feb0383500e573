"""Evaluation metrics per task, as plain floats ready for pydantic, Temporal and MLflow."""

from __future__ import annotations

import math
import warnings

import numpy as np

from pmls.contracts import Task
from pmls.contracts.models import HIGHER_IS_BETTER  # one set, read by the deployment gates too

__all__ = ["HIGHER_IS_BETTER", "PRIMARY_METRIC", "PROBA_EPS", "compute_metrics"]

PRIMARY_METRIC = {Task.BINARY: "roc_auc", Task.MULTICLASS: "log_loss", Task.REGRESSION: "rmse"}
PROBA_EPS = 1e-15


def _finite(values: dict[str, float]) -> dict[str, float]:
    # NaN / inf would break JSON and comparisons downstream: an undefined metric is left out.
    return {name: float(v) for name, v in values.items() if v is not None and math.isfinite(float(v))}


def _as_proba(pred: np.ndarray) -> np.ndarray:
    proba = np.asarray(pred, dtype=np.float64)
    if proba.ndim == 1:  # a binary model's P(class 1)
        proba = np.column_stack([1.0 - proba, proba])
    proba = np.clip(proba, PROBA_EPS, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if proba.shape[1] == 2:
        return roc_auc_score(y, proba[:, 1]) if len(np.unique(y)) == 2 else None
    # One-vs-rest macro average over the classes this split holds (a missing class has no AUC).
    scores = [
        roc_auc_score(y == k, proba[:, k]) for k in range(proba.shape[1]) if 0 < (y == k).sum() < len(y)
    ]
    return float(np.mean(scores)) if scores else None


def _classification(y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

    y = np.asarray(y).astype(int)
    proba = _as_proba(pred)
    k = proba.shape[1]
    labels = proba.argmax(axis=1)
    out = {
        "accuracy": accuracy_score(y, labels),
        "balanced_accuracy": balanced_accuracy_score(y, labels),
        "roc_auc": _roc_auc(y, proba),
        "log_loss": log_loss(y, proba, labels=list(range(k))),
        "f1": f1_score(y, labels, average="binary" if k == 2 else "macro", zero_division=0),
    }
    if k == 2:
        out["brier"] = float(np.mean((proba[:, 1] - y) ** 2))
    return out


def _regression(y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import r2_score

    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    error = pred - y
    nonzero = y != 0  # percentage error is undefined at a zero target: average over the others
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": r2_score(y, pred) if len(y) > 1 and np.ptp(y) > 0 else None,
        "mape": float(np.mean(np.abs(error[nonzero] / y[nonzero]))) if nonzero.any() else None,
    }


def compute_metrics(task: Task, y_true, y_pred_or_proba) -> dict[str, float]:
    """Classification takes class indices and an n x k probability matrix; regression, values."""
    if len(y_true) == 0:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on splits missing a class; we handle those
        if task is Task.REGRESSION:
            return _finite(_regression(y_true, y_pred_or_proba))
        return _finite(_classification(y_true, y_pred_or_proba))

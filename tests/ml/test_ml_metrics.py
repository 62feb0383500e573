from __future__ import annotations

import numpy as np

from pmls.contracts import Task
from pmls.ml.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC, compute_metrics


def plain(metrics: dict) -> bool:
    return all(type(v) is float and np.isfinite(v) for v in metrics.values())


def test_binary_metrics():
    y = np.array([0, 1, 1, 0, 1])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4], [0.7, 0.3]])
    m = compute_metrics(Task.BINARY, y, proba)
    assert set(m) == {"accuracy", "balanced_accuracy", "roc_auc", "log_loss", "f1", "brier"}
    assert plain(m) and m["accuracy"] == 0.8
    assert compute_metrics(Task.BINARY, y, proba[:, 1]) == m  # P(class 1) alone works too


def test_single_class_split_skips_auc():
    m = compute_metrics(Task.BINARY, np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]))
    assert "roc_auc" not in m and plain(m) and "log_loss" in m


def test_multiclass_metrics_with_absent_class():
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]])
    m = compute_metrics(Task.MULTICLASS, y, proba)
    assert plain(m) and m["roc_auc"] == 1.0 and "brier" not in m and m["accuracy"] == 1.0


def test_regression_metrics():
    m = compute_metrics(Task.REGRESSION, np.array([1.0, 2.0, 0.0, 4.0]), np.array([1.5, 2.0, 0.5, 3.0]))
    assert set(m) == {"rmse", "mae", "r2", "mape"} and plain(m)
    assert m["mae"] == 0.5 and abs(m["mape"] - (0.5 + 0 + 0.25) / 3) < 1e-12  # zero target left out
    assert "r2" not in compute_metrics(Task.REGRESSION, np.array([2.0, 2.0]), np.array([1.0, 2.0]))


def test_primary_metrics_and_direction():
    assert PRIMARY_METRIC[Task.BINARY] in HIGHER_IS_BETTER
    assert PRIMARY_METRIC[Task.MULTICLASS] not in HIGHER_IS_BETTER
    assert PRIMARY_METRIC[Task.REGRESSION] not in HIGHER_IS_BETTER

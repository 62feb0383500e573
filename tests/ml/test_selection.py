"""Feature selection: noise out, signal in, deterministic, and fit only on the plan's training rows."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_breast_cancer

from pmls.contracts import Task
from pmls.ml import selection
from pmls.ml.cv import CVPlan, plan_cv
from pmls.ml.selection import SelectionReport, select_features


@pytest.fixture(scope="module")
def cancer():
    """breast_cancer + 20 noise columns + an exact duplicate + a constant + an all-missing column."""
    data = load_breast_cancer()
    rng = np.random.default_rng(0)
    X = np.column_stack(
        [
            data.data,
            rng.normal(size=(len(data.data), 20)),
            data.data[:, 0],
            np.full(len(data.data), 7.0),
            np.full(len(data.data), np.nan),
        ]
    )
    real = [str(n) for n in data.feature_names]
    names = real + [f"noise{i}" for i in range(20)] + ["dup", "const", "empty"]
    plan = plan_cv(pl.DataFrame({"y": data.target}), target="y", task=Task.BINARY, folds=5, seed=0)
    return X, data.target, names, real, plan


def test_noise_dropped_signal_kept(cancer):
    X, y, names, real, plan = cancer
    report = select_features(X, y, names, task=Task.BINARY, plan=plan, seed=0)
    assert report.dropped["dup"] == "duplicate of mean radius"
    assert report.dropped["const"] == "constant" and report.dropped["empty"].startswith("constant")
    assert report.dropped["mean perimeter"].startswith("near-identical to mean radius (corr 0.99")
    noise_kept = [n for n in report.kept if n.startswith("noise")]
    # A real column counts as kept if it survives or is dropped as a copy of one that does.
    real_kept = [n for n in real if n in report.kept or report.dropped[n].startswith("near-identical")]
    assert len(noise_kept) <= 5, noise_kept  # measured: 2-3 over several noise seeds
    assert len(real_kept) >= 18, report.dropped  # measured: 22-23 of 30
    assert sorted(report.kept + list(report.dropped)) == sorted(names)
    assert report.to_dict() == {"kept": report.kept, "dropped": report.dropped}


def test_deterministic_per_seed(cancer):
    X, y, names, _, plan = cancer
    first = select_features(X, y, names, task=Task.BINARY, plan=plan, seed=3, max_rows=300)
    assert select_features(X, y, names, task=Task.BINARY, plan=plan, seed=3, max_rows=300) == first


def test_fits_only_on_fold_training_rows(cancer, monkeypatch):
    X, y, names, _, plan = cancer
    X = X.copy()
    X[:, 0] += np.arange(len(X)) * 1e-9  # give every row a unique fingerprint in column 0
    row_of = {value: i for i, value in enumerate(X[:, 0])}
    fits: list[set[int]] = []
    real_dataset = lgb.Dataset

    def spy(data, label=None, **kw):
        fits.append({row_of[v] for v in np.asarray(data)[:, 0]})
        return real_dataset(data, label, **kw)

    monkeypatch.setattr(lgb, "Dataset", spy)
    select_features(X, y, names, task=Task.BINARY, plan=plan, seed=0)
    used = plan.folds[-3:]
    assert len(fits) == len(used) * (1 + selection.NULL_RUNS)
    for rows in fits:  # each model saw one fold's training rows, and none of its validation rows
        assert any(rows <= set(f.train) and not rows & set(f.valid) for f in used)


def test_time_series_plan_never_fits_on_the_future(monkeypatch):
    rng = np.random.default_rng(1)
    n = 600
    X = np.column_stack([rng.normal(size=n), rng.normal(size=n), np.arange(n, dtype=float)])
    y = (X[:, 0] > 0).astype(int)
    frame = pl.DataFrame({"t": np.arange(n), "y": y})
    plan = plan_cv(frame, target="y", task=Task.BINARY, strategy="timeseries", timestamp_column="t")
    latest: list[float] = []
    real_dataset = lgb.Dataset

    def spy(data, label=None, **kw):
        latest.append(np.asarray(data)[:, -1].max())
        return real_dataset(data, label, **kw)

    monkeypatch.setattr(lgb, "Dataset", spy)
    report = select_features(X, y, ["signal", "noise", "t"], task=Task.BINARY, plan=plan, seed=0)
    assert max(latest) < plan.folds[-1].valid.min()  # the last validation block is never fit on
    assert "signal" in report.kept


def test_never_drops_everything_and_regression_works():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = rng.normal(size=200)  # nothing to learn
    plan = plan_cv(pl.DataFrame({"y": y}), target="y", task=Task.REGRESSION, folds=3)
    report = select_features(X, y, ["a", "b", "c"], task=Task.REGRESSION, plan=plan)
    assert len(report.kept) >= 1
    const = select_features(np.ones((50, 2)), y[:50], ["a", "b"], task=Task.REGRESSION, plan=plan)
    assert const.kept == ["a"] and const.dropped == {"b": "constant"}


def test_no_folds_and_categoricals():
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 4, size=400).astype(float)
    X = np.column_stack([colour, colour * 2, rng.normal(size=400)])  # codes: no correlation pruning
    y = (colour == 2).astype(int)
    plan = CVPlan("none", (), "cross-validation off")
    report = select_features(
        X, y, ["colour", "colour2", "noise"], task=Task.BINARY, plan=plan, categorical=[0, 1]
    )
    assert "colour" in report.kept and isinstance(report, SelectionReport)
    # Category codes are labels, not quantities: never pruned as near-identical by correlation.
    assert not report.dropped.get("colour2", "").startswith("near-identical")

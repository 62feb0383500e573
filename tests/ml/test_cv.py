"""The CV plan: strategies, edge cases, and the leakage guarantees (time order, gap, entities)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from pmls.contracts import Task
from pmls.ml.cv import CVPlan, Fold, plan_cv
from pmls.ml.errors import DataError


def shuffled(frame: pl.DataFrame, seed: int = 1) -> pl.DataFrame:
    # Plans index the frame as given; a shuffled frame proves they do not assume time order.
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


def test_json_round_trip(frame):
    plan = plan_cv(frame, target="y", task=Task.BINARY, timestamp_column="ts", gap="P2D")
    again = CVPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.folds[0].train.dtype == np.int64
    with pytest.raises(ValueError):
        again.folds[0].train[0] = 5  # read-only: a shared plan cannot be edited in place


@pytest.mark.parametrize(
    ("kw", "task", "expected"),
    [
        ({"timestamp_column": "ts", "entity_column": "id"}, Task.BINARY, "timeseries"),
        ({"entity_column": "id"}, Task.BINARY, "group"),
        ({}, Task.BINARY, "stratified"),
        ({}, Task.REGRESSION, "kfold"),
    ],
)
def test_auto_strategy(frame, kw, task, expected):
    assert (
        plan_cv(frame, target="x" if task is Task.REGRESSION else "y", task=task, **kw).strategy == expected
    )


def test_none_has_no_folds(frame):
    plan = plan_cv(frame, target="y", task=Task.BINARY, strategy="none")
    assert plan.folds == () and CVPlan.from_dict(plan.to_dict()) == plan


def test_shuffled_folds_partition_the_rows(frame):
    for strategy in ("kfold", "stratified"):
        plan = plan_cv(frame, target="y", task=Task.BINARY, strategy=strategy, folds=4, seed=3)
        valid = np.concatenate([f.valid for f in plan.folds])
        assert len(plan.folds) == 4 and sorted(valid) == list(range(frame.height))
        for fold in plan.folds:
            assert not set(fold.train) & set(fold.valid) and len(fold.train) + len(fold.valid) == frame.height
    assert plan_cv(frame, target="y", task=Task.BINARY, seed=3) == plan_cv(
        frame, target="y", task=Task.BINARY, seed=3
    )


def test_stratified_keeps_class_shares(frame):
    y = frame.get_column("y").to_numpy()
    for fold in plan_cv(frame, target="y", task=Task.BINARY, strategy="stratified").folds:
        assert abs(y[fold.valid].mean() - y.mean()) < 0.03


# --- leakage: time order and gap ---


def _times(frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
    return frame.get_column("ts").to_numpy()[rows]


@pytest.mark.parametrize("gap", [None, "P3D", "36h"])
def test_timeseries_never_validates_on_the_past(frame, gap):
    data = shuffled(frame)
    plan = plan_cv(data, target="y", task=Task.BINARY, strategy="timeseries", timestamp_column="ts", gap=gap)
    need = np.timedelta64(int(timedelta(days=3 if gap == "P3D" else 1.5 if gap else 0).total_seconds()), "s")
    previous_valid_end = None
    for fold in plan.folds:
        train_t, valid_t = _times(data, fold.train), _times(data, fold.valid)
        assert train_t.max() < valid_t.min()  # no validation row precedes a training row
        assert valid_t.min() - train_t.max() > need if gap else True
        if previous_valid_end is not None:  # expanding window, consecutive blocks
            assert valid_t.min() > previous_valid_end
        previous_valid_end = valid_t.max()
    assert previous_valid_end == data.get_column("ts").max()
    assert all(len(a.train) < len(b.train) for a, b in zip(plan.folds, plan.folds[1:], strict=False))


@pytest.mark.parametrize("gap", [None, "P1D"])
def test_the_last_fold_validates_on_the_validation_period(frame, gap):
    """Given the validation period, the search's latest fold is it: trained on the training rows before it
    (less the gap), and positions past the training rows index it in order."""
    train, validation = shuffled(frame[:300]), frame[300:]
    plan = plan_cv(
        train,
        validation=validation,
        target="y",
        task=Task.BINARY,
        strategy="timeseries",
        timestamp_column="ts",
        folds=4,
        gap=gap,
    )
    assert (
        plan.spans_validation
        and len(plan.folds) == 4
        and "the last on the validation period" in plan.description
    )
    both = pl.concat([train, validation])
    for fold in plan.folds:
        assert _times(both, fold.train).max() < _times(both, fold.valid).min()
    last = plan.folds[-1]
    assert last.valid.tolist() == list(range(300, 400))
    assert len(last.train) == 300 - (4 if gap else 0)  # one row per 6 hours: a day is 4 rows
    assert all(f.valid.max() < 300 for f in plan.folds[:-1])
    assert CVPlan.from_dict(plan.to_dict()) == plan
    # Without a validation period (or with CV on shuffled data) nothing changes.
    assert not plan_cv(
        train, target="y", task=Task.BINARY, strategy="timeseries", timestamp_column="ts"
    ).spans_validation
    assert not plan_cv(train, validation=validation, target="y", task=Task.BINARY, folds=4).spans_validation


def test_gap_removes_exactly_the_rows_within_it(frame):
    plain = plan_cv(frame, target="y", task=Task.BINARY, strategy="timeseries", timestamp_column="ts")
    gapped = plan_cv(
        frame, target="y", task=Task.BINARY, strategy="timeseries", timestamp_column="ts", gap="P1D"
    )
    for a, b in zip(plain.folds, gapped.folds, strict=True):
        assert np.array_equal(a.valid, b.valid)
        assert len(a.train) - len(b.train) == 4  # one row per 6 hours: a day is 4 rows


def test_equal_timestamps_never_straddle_a_cut():
    day0 = datetime(2024, 1, 1)
    frame = pl.DataFrame(
        {"ts": [day0 + timedelta(days=i // 7) for i in range(140)], "y": [i % 2 for i in range(140)]}
    )
    plan = plan_cv(
        shuffled(frame), target="y", task=Task.BINARY, strategy="timeseries", timestamp_column="ts", folds=4
    )
    data = shuffled(frame)
    for fold in plan.folds:
        assert not set(_times(data, fold.train)) & set(_times(data, fold.valid))


def test_numeric_time_column_works(frame):
    data = frame.with_columns(step=pl.int_range(pl.len()))
    plan = plan_cv(
        data, target="y", task=Task.BINARY, strategy="timeseries", timestamp_column="step", folds=3
    )
    assert [len(f.valid) for f in plan.folds] == [100, 100, 100]


# --- leakage: entities ---


@pytest.mark.parametrize("task", [Task.BINARY, Task.REGRESSION])
def test_group_never_shares_an_entity(frame, task):
    data = shuffled(frame)
    plan = plan_cv(data, target="y" if task is Task.BINARY else "x", task=task, entity_column="id", folds=5)
    ids = data.get_column("id").to_numpy()
    seen = set()
    for fold in plan.folds:
        assert not set(ids[fold.train]) & set(ids[fold.valid])
        seen |= set(ids[fold.valid])
    assert seen == set(ids)


# --- edge cases and errors ---


def test_rare_class_lowers_the_fold_count(frame):
    y = np.zeros(frame.height, dtype=int)
    y[:3] = 1
    plan = plan_cv(frame.with_columns(y=y), target="y", task=Task.BINARY, strategy="stratified", folds=5)
    assert len(plan.folds) == 3 and "rarest class has 3 rows" in plan.description
    y[1:3] = 0
    single = plan_cv(frame.with_columns(y=y), target="y", task=Task.BINARY, folds=5)
    assert len(single.folds) == 5 and "not stratified" in single.description


def test_stratified_regression_falls_back_to_kfold(frame):
    plan = plan_cv(frame, target="x", task=Task.REGRESSION, strategy="stratified")
    assert "not stratified" in plan.description and len(plan.folds) == 5


def _error(frame, **kw) -> DataError:
    with pytest.raises(DataError) as err:
        plan_cv(frame, **{"target": "y", "task": Task.BINARY, **kw})
    return err.value


def test_errors_name_the_field(frame):
    few = _error(frame[:40], folds=5)
    assert few.field == "validation_config.cv_folds"
    assert few.message == "5 folds need at least 50 rows; the training period has 40"
    assert "at least 60 rows" in _error(frame[:50], strategy="timeseries", timestamp_column="ts").message
    no_ts = _error(frame, strategy="timeseries")
    assert no_ts.field == "validation_config.cv_strategy" and "timestamp_column" in no_ts.message
    assert _error(frame, strategy="bogus").field == "validation_config.cv_strategy"
    groups = _error(
        frame.with_columns(id=pl.Series([f"e{i % 3}" for i in range(frame.height)])), entity_column="id"
    )
    assert "at least 5 entities in 'id'; the training period has 3" in groups.message
    assert _error(frame, strategy="group").field == "validation_config.cv_strategy"
    assert (
        _error(frame, strategy="timeseries", timestamp_column="ts", gap="P60D").field == "dataset_config.gap"
    )
    assert (
        _error(frame, strategy="timeseries", timestamp_column="ts", gap="soon").field == "dataset_config.gap"
    )


def test_fold_equality_is_by_content():
    assert Fold(np.array([2, 1]), np.array([3])) == Fold(np.array([1, 2]), np.array([3]))
    assert Fold(np.array([1]), np.array([3])) != Fold(np.array([1]), np.array([4]))

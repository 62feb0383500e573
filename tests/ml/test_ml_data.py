from __future__ import annotations

import pickle
from datetime import datetime

import polars as pl
import pytest

from pmls.contracts import DatasetConfig, Task
from pmls.ml.data import infer_task, prepare_splits
from pmls.ml.errors import DataError
from pmls.ml.sources import FileAccess, load_source

PERIODS = {
    "training_period": "2024-01-01/2024-02-29",
    "validation_period": "2024-03-01/2024-03-15",
    "test_period": "2024-03-16/2024-03-31",
}


def cfg(**kw) -> DatasetConfig:
    return DatasetConfig(**{"source": "x.parquet", "target": "y", **kw})


# --- loading ---


def test_glob_joins_parquet_parts(tmp_path, frame):
    frame[:150].write_parquet(tmp_path / "part-1.parquet")
    frame[150:].write_parquet(tmp_path / "part-2.parquet")
    loaded = load_source(str(tmp_path / "part-*.parquet"), FileAccess.anywhere())
    assert loaded.height == frame.height and loaded.columns == frame.columns
    assert load_source(str(tmp_path), FileAccess.anywhere()).height == frame.height  # a directory of parts


def test_csv_parses_dates_and_ndjson_loads(tmp_path, frame):
    frame.write_csv(tmp_path / "d.csv")
    frame.with_columns(pl.col("ts").cast(pl.String)).write_ndjson(tmp_path / "d.jsonl")
    csv = load_source(str(tmp_path / "d.csv"), FileAccess.anywhere())
    assert isinstance(csv.schema["ts"], pl.Datetime)
    assert load_source(str(tmp_path / "d.jsonl"), FileAccess.anywhere()).height == frame.height


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no file matches") as info:
        load_source(str(tmp_path / "nothing*.parquet"), FileAccess.anywhere())
    assert info.value.field == "dataset_config.source"
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type \.xlsx; supported: \.parquet"):
        load_source(str(tmp_path / "d.xlsx"), FileAccess.anywhere())
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="could not read"):
        load_source(str(tmp_path / "bad.parquet"), FileAccess.anywhere())


def test_data_error_shape():
    err = DataError("dataset_config.target", "boom")
    assert (err.field, err.message, str(err)) == (
        "dataset_config.target",
        "boom",
        "dataset_config.target: boom",
    )
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))  # crosses process and thread-pool boundaries intact
    assert (copy.field, copy.message) == (err.field, err.message)


# --- checks and task inference ---


def test_missing_target_lists_columns(frame):
    with pytest.raises(DataError) as info:
        prepare_splits(frame, cfg(target="nope"), seed=0)
    assert info.value.field == "dataset_config.target"
    assert "column 'nope' not in the data; columns are: ts, x, count" in str(info.value)


def test_long_column_list_is_truncated():
    wide = pl.DataFrame({f"c{i}": [1] for i in range(30)})
    with pytest.raises(DataError, match=r"\(10 more\)"):
        prepare_splits(wide, cfg(), seed=0)


def test_missing_feature_and_timestamp_columns(frame):
    with pytest.raises(DataError) as info:
        prepare_splits(frame, cfg(features=["x", "zzz"]), seed=0)
    assert info.value.field == "dataset_config.features"
    with pytest.raises(DataError) as info:
        prepare_splits(frame, cfg(timestamp_column="when"), seed=0)
    assert info.value.field == "dataset_config.timestamp_column"


def test_single_class_target(frame):
    with pytest.raises(DataError, match="only one class") as info:
        prepare_splits(frame.with_columns(y=pl.lit(1)), cfg(), seed=0)
    assert info.value.field == "dataset_config.target"


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b", "a"], Task.BINARY),
        (["a", "b", "c"], Task.MULTICLASS),
        ([True, False, True], Task.BINARY),
        ([0, 1, 2, 3], Task.MULTICLASS),
        ([0, 1, 1], Task.BINARY),
        (list(range(50)), Task.REGRESSION),
        ([0.5, 1.0, 1.5], Task.REGRESSION),
    ],
)
def test_infer_task(values, task):
    assert infer_task(pl.Series("y", values)) is task


def test_categorical_target_and_null_targets(frame):
    df = frame.with_columns(
        pl.when(pl.col("x") > 2)
        .then(None)
        .otherwise(pl.col("y").cast(pl.String))
        .cast(pl.Categorical)
        .alias("y")
    )
    splits = prepare_splits(df, cfg(), seed=0)
    assert splits.task is Task.BINARY and splits.classes == ["0", "1"]
    total = splits.train.height + splits.validation.height + splits.test.height
    assert total == df.filter(pl.col("y").is_not_null()).height


# --- splitting ---


def test_period_split_is_closed_open_and_disjoint(frame):
    splits = prepare_splits(frame, cfg(timestamp_column="ts", **PERIODS), seed=0)
    assert splits.train["ts"].max() == datetime(2024, 2, 29, 18)  # date-only end: through that day
    assert splits.validation["ts"].min() == datetime(2024, 3, 1)
    assert splits.test["ts"].max() == datetime(2024, 3, 31, 18)
    ids = [set(s["ts"].to_list()) for s in (splits.train, splits.validation, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == frame.filter(pl.col("ts") < datetime(2024, 4, 1)).height
    assert splits.description.startswith("by period over ts: train 240 rows 2024-01-01..2024-02-29 18:00:00")


def test_string_timestamps_are_parsed(frame):
    df = frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S"))
    splits = prepare_splits(df, cfg(timestamp_column="ts", **PERIODS), seed=0)
    assert isinstance(splits.train.schema["ts"], pl.Datetime) and splits.validation.height == 60


def test_empty_period_names_the_field(frame):
    periods = {**PERIODS, "test_period": "2025-01-01/2025-02-01"}
    with pytest.raises(DataError) as info:
        prepare_splits(frame, cfg(timestamp_column="ts", **periods), seed=0)
    assert info.value.field == "dataset_config.test_period"
    assert "holds 0 rows" in info.value.message and "the data has 400 rows" in info.value.message
    assert "2024-01-01..2024-04-09 18:00:00" in info.value.message


def test_chronological_split_without_periods(frame):
    splits = prepare_splits(frame.reverse(), cfg(timestamp_column="ts"), seed=0)
    assert (splits.train.height, splits.validation.height, splits.test.height) == (280, 60, 60)
    assert splits.train["ts"].max() < splits.validation["ts"].min()
    assert splits.validation["ts"].max() < splits.test["ts"].min()


def test_random_split_is_stratified_and_seeded(frame):
    a = prepare_splits(frame, cfg(), seed=3)
    b = prepare_splits(frame, cfg(), seed=3)
    assert a.train.equals(b.train) and a.test.equals(b.test)
    assert (a.train.height, a.validation.height, a.test.height) == (280, 60, 60)
    rates = [s["y"].mean() for s in (a.train, a.validation, a.test)]
    assert max(rates) - min(rates) < 0.05
    assert "stratified" in a.description


def test_too_few_rows(make_frame):
    with pytest.raises(DataError, match="each split needs 10"):
        prepare_splits(make_frame(40), cfg(), seed=0)


def test_training_split_needs_two_classes(frame):
    df = frame.with_columns(
        pl.when(pl.col("ts") < datetime(2024, 3, 1)).then(0).otherwise(pl.col("y")).alias("y")
    )
    with pytest.raises(DataError, match="training split holds only one class"):
        prepare_splits(df, cfg(timestamp_column="ts", **PERIODS), seed=0)

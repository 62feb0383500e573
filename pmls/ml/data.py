"""Check a loaded frame and split it into train / validation / test (loading: :mod:`pmls.ml.sources`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from pmls.contracts import DatasetConfig, Task
from pmls.contracts.periods import parse_period
from pmls.ml.errors import DataError
from pmls.ml.sources import SOURCE

PERIOD_FIELDS = ("training_period", "validation_period", "test_period")
SPLIT_NAMES = ("train", "validation", "test")
MIN_SPLIT_ROWS = 10
MAX_INT_CLASSES = 20  # an integer target with more distinct values is treated as a quantity
MAX_CLASSES = 200  # beyond this a "class" column is almost surely an id, and multiclass would crawl
TARGET = "dataset_config.target"


# --- checks and task inference ---------------------------------------------------------------


def _columns_text(df: pl.DataFrame, limit: int = 20) -> str:
    names = df.columns
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _require_column(df: pl.DataFrame, name: str | None, field: str) -> None:
    if name is not None and name not in df.columns:
        raise DataError(field, f"column '{name}' not in the data; columns are: {_columns_text(df)}")


def _check_columns(df: pl.DataFrame, cfg: DatasetConfig) -> None:
    _require_column(df, cfg.target, TARGET)
    _require_column(df, cfg.timestamp_column, "dataset_config.timestamp_column")
    _require_column(df, cfg.entity_column, "dataset_config.entity_column")
    for name in cfg.features or []:
        _require_column(df, name, "dataset_config.features")
    if cfg.features is not None and cfg.target in cfg.features:
        raise DataError("dataset_config.features", f"lists the target '{cfg.target}'; remove it")


def _is_label_dtype(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Boolean) or isinstance(dtype, pl.Categorical | pl.Enum)


def infer_task(target: pl.Series) -> Task:
    """Guess the task from the target's type and number of distinct values (nulls excluded)."""
    dtype = target.dtype
    if _is_label_dtype(dtype) or (dtype.is_integer() and target.n_unique() <= MAX_INT_CLASSES):
        return Task.BINARY if target.n_unique() <= 2 else Task.MULTICLASS
    if dtype.is_numeric():
        return Task.REGRESSION
    raise DataError(TARGET, f"column '{target.name}' has type {dtype}, which is neither a label nor a number")


def _classes(target: pl.Series, task: Task) -> list | None:
    if task is Task.REGRESSION:
        if not (target.dtype.is_numeric() or target.dtype == pl.Boolean):
            raise DataError(TARGET, f"regression needs a numeric target; '{target.name}' is {target.dtype}")
        return None
    classes = sorted(target.unique().to_list())
    if len(classes) < 2:
        raise DataError(
            TARGET, f"'{target.name}' has only one class ({classes[0]!r}); a classifier needs two or more"
        )
    if task is Task.BINARY and len(classes) > 2:
        raise DataError(
            TARGET, f"binary task, but '{target.name}' has {len(classes)} classes; use multiclass"
        )
    if len(classes) > MAX_CLASSES:
        raise DataError(
            TARGET, f"'{target.name}' has {len(classes)} classes (at most {MAX_CLASSES}); is it an id?"
        )
    return classes


# --- the timestamp column --------------------------------------------------------------------


def _as_naive_datetime(df: pl.DataFrame, column: str) -> pl.DataFrame:
    """Make the timestamp a naive-UTC datetime, as parse_period's bounds are."""
    series = df.get_column(column)
    dtype = series.dtype
    if dtype == pl.String:
        parsed = series.str.to_datetime(strict=False)
        bad = series.filter(parsed.is_null() & series.is_not_null())
        if len(bad):
            raise DataError(
                "dataset_config.timestamp_column",
                f"{len(bad)} values of '{column}' are not date-times, e.g. {bad[0]!r}",
            )
        series = parsed
    elif dtype == pl.Date:
        series = series.cast(pl.Datetime("us"))
    elif not isinstance(dtype, pl.Datetime):
        raise DataError(
            "dataset_config.timestamp_column", f"column '{column}' has type {dtype}, not a date-time"
        )
    if series.dtype.time_zone is not None:
        series = series.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return df.with_columns(series.alias(column))


def _fmt(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.date().isoformat() if moment.time() == datetime.min.time() else moment.isoformat(sep=" ")


def _time_range(df: pl.DataFrame, column: str) -> str:
    series = df.get_column(column)
    return f"{_fmt(series.min())}..{_fmt(series.max())}"


# --- splitting -------------------------------------------------------------------------------


def _split_by_periods(df: pl.DataFrame, cfg: DatasetConfig) -> list[pl.DataFrame]:
    ts = cfg.timestamp_column
    parts = []
    for field in PERIOD_FIELDS:
        text = getattr(cfg, field)
        period = parse_period(text)
        part = df.filter((pl.col(ts) >= period.start) & (pl.col(ts) < period.end))
        if len(part) < MIN_SPLIT_ROWS:
            raise DataError(
                f"dataset_config.{field}",
                f"{text} holds {len(part)} rows (need at least {MIN_SPLIT_ROWS}); the data has {len(df)} "
                f"rows with '{ts}' from {_time_range(df, ts)}",
            )
        parts.append(part)
    return parts


def _cut_points(n: int) -> tuple[int, int]:
    return int(round(n * 0.70)), int(round(n * 0.85))


def _split_chronologically(df: pl.DataFrame, ts: str) -> list[pl.DataFrame]:
    ordered = df.sort(ts, maintain_order=True)
    first, second = _cut_points(len(ordered))
    return [ordered[:first], ordered[first:second], ordered[second:]]


def _split_randomly(df: pl.DataFrame, target: str, task: Task, seed: int) -> list[pl.DataFrame]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(df))
    labels = None if task is Task.REGRESSION else df.get_column(target).to_numpy()
    try:
        train, rest = train_test_split(index, test_size=0.30, random_state=seed, stratify=labels)
        valid, test = train_test_split(
            rest, test_size=0.50, random_state=seed, stratify=None if labels is None else labels[rest]
        )
    except ValueError:
        # A class too rare to stratify on (one or two rows): fall back to a plain shuffle.
        train, rest = train_test_split(index, test_size=0.30, random_state=seed)
        valid, test = train_test_split(rest, test_size=0.50, random_state=seed)
    return [df[np.sort(part)] for part in (train, valid, test)]


def _describe(how: str, parts: list[pl.DataFrame], ts: str | None) -> str:
    pieces = []
    for name, part in zip(SPLIT_NAMES, parts, strict=True):
        span = f" {_time_range(part, ts)}" if ts else ""
        pieces.append(f"{name} {len(part)} rows{span}")
    return f"{how}: " + ", ".join(pieces)


def _split(df: pl.DataFrame, cfg: DatasetConfig, task: Task, seed: int) -> tuple[list[pl.DataFrame], str]:
    ts = cfg.timestamp_column
    if ts and cfg.training_period:
        return _split_by_periods(df, cfg), f"by period over {ts}"
    if ts:
        return _split_chronologically(df, ts), f"chronological 70/15/15 over {ts}"
    how = "shuffled" if task is Task.REGRESSION else "stratified"
    return _split_randomly(df, cfg.target, task, seed), f"{how} random 70/15/15 (seed {seed})"


def _check_parts(parts: list[pl.DataFrame], target: str, task: Task) -> None:
    for name, part in zip(SPLIT_NAMES, parts, strict=True):
        if len(part) < MIN_SPLIT_ROWS:
            raise DataError(
                SOURCE, f"the {name} split has {len(part)} rows; each split needs {MIN_SPLIT_ROWS}"
            )
    if task is not Task.REGRESSION and parts[0].get_column(target).n_unique() < 2:
        raise DataError(
            TARGET, f"the training split holds only one class of '{target}'; a classifier needs two"
        )


def _clean(df: pl.DataFrame, cfg: DatasetConfig) -> pl.DataFrame:
    df = df.filter(pl.col(cfg.target).is_not_null())
    if isinstance(df.schema[cfg.target], pl.Categorical | pl.Enum):
        # Labels are compared and stored as plain strings everywhere downstream.
        df = df.with_columns(pl.col(cfg.target).cast(pl.String))
    if cfg.timestamp_column:
        df = _as_naive_datetime(df, cfg.timestamp_column)
        df = df.filter(pl.col(cfg.timestamp_column).is_not_null())  # an undated row fits no period
    return df


@dataclass
class Splits:
    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame
    task: Task
    classes: list | None
    description: str


def prepare_splits(df: pl.DataFrame, cfg: DatasetConfig, *, seed: int) -> Splits:
    """Check the columns, settle the task and classes, and split train / validation / test."""
    _check_columns(df, cfg)
    df = _clean(df, cfg)
    if len(df) == 0:
        raise DataError(TARGET, f"no rows with a value for '{cfg.target}'")
    target = df.get_column(cfg.target)
    task = cfg.task or infer_task(target)
    classes = _classes(target, task)
    parts, how = _split(df, cfg, task, seed)
    _check_parts(parts, cfg.target, task)
    description = _describe(how, parts, cfg.timestamp_column)
    return Splits(parts[0], parts[1], parts[2], task, classes, description)


def row_fingerprints(frame: pl.DataFrame, columns: list[str] | None = None) -> np.ndarray:
    """A 64-bit fingerprint per row over ``columns`` (default: all, by name), values compared as text.

    A bundle keeps the fingerprints of the rows it was fitted on, so that a later comparison can judge it
    only on rows it never saw. Text makes them independent of how a source typed a column, and BLAKE2 of
    that text keeps them the same across library versions (a library's own row hash may change).
    """
    import hashlib

    columns = sorted(frame.columns) if columns is None else columns
    if not columns or frame.height == 0:
        return np.zeros(frame.height, dtype=np.uint64)
    as_text = [
        (pl.col(c).cast(pl.Float64) if frame.schema[c].is_numeric() else pl.col(c))
        .cast(pl.String)
        .fill_null("\x00")
        for c in columns
    ]  # numbers as floats: 1 and 1.0 are the same value
    text = frame.select(pl.concat_str(as_text, separator="\x1f").alias("row")).get_column("row")
    digests = b"".join(hashlib.blake2b(row.encode(), digest_size=8).digest() for row in text)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)

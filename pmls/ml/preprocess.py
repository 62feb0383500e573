"""Turn raw rows (polars or pandas) into the float32 matrix LightGBM trains and predicts on.

The same fitted Preprocessor runs at training and at serving, so raw request rows need only the
source's columns: types are coerced leniently (a number sent as a string still parses) and anything
unreadable becomes NaN, which the booster treats as missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from pmls.contracts import Task
from pmls.ml.errors import DataError

MAX_CATEGORIES = 1000
DATETIME_PARTS = ("year", "month", "day", "dayofweek", "hour")
TRUE_TEXT = ("true", "t", "yes", "y", "1")
FALSE_TEXT = ("false", "f", "no", "n", "0")
FORMAT_VERSION = 1


def _kind(dtype: pl.DataType) -> str | None:
    """How a column is encoded; None means it cannot be a feature (lists, structs, all-null ...)."""
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_numeric():
        return "numeric"
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        return "category"
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return "datetime"
    return None


def _to_polars(frame: Any) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    try:
        return pl.from_pandas(frame)
    except Exception as exc:  # polars raises several types for odd pandas columns
        raise DataError("input", f"could not read the rows: {exc}") from exc


# --- per-kind expressions, tolerant of the type a column arrives in -------------------------


def _as_float(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64, strict=False)


def _bool_as_float(name: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        text = pl.col(name).str.strip_chars().str.to_lowercase()
        return pl.when(text.is_in(TRUE_TEXT)).then(1.0).when(text.is_in(FALSE_TEXT)).then(0.0).otherwise(None)
    return pl.col(name).cast(pl.Float64, strict=False)


def _as_datetime(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.String:
        return col.str.to_datetime(strict=False)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return col.cast(pl.Datetime("us"))
    return pl.lit(None, dtype=pl.Datetime("us"))  # e.g. an all-null column


def _datetime_parts(name: str, moment: pl.Expr) -> list[pl.Expr]:
    parts = {
        "year": moment.dt.year(),
        "month": moment.dt.month(),
        "day": moment.dt.day(),
        "dayofweek": moment.dt.weekday() - 1,  # Monday = 0, as pandas counts
        "hour": moment.dt.hour(),
    }
    return [parts[p].cast(pl.Float64).alias(f"{name}_{p}") for p in DATETIME_PARTS]


class Preprocessor:
    """Learns column encodings on training rows; ``transform`` applies them to any rows."""

    def __init__(
        self,
        target: str,
        task: Task,
        timestamp_column: str | None = None,
        features: list[str] | None = None,
        classes: list | None = None,
    ) -> None:
        self.target = target
        self.task = task
        self.timestamp_column = timestamp_column
        self.features = features
        self.classes = classes  # all labels seen in the data; default: those in the training rows

    # --- fitting ---

    def fit(self, df: pl.DataFrame) -> Preprocessor:
        self.kinds_ = self._learn_kinds(df)
        self.categories_ = {
            name: self._learn_categories(df.get_column(name))
            for name, kind in self.kinds_.items()
            if kind == "category"
        }
        self.feature_names_ = [out for name in self.kinds_ for out in self._outputs(name)]
        self.categorical_features_ = list(self.categories_)
        self.classes_ = self._learn_classes(df)
        return self

    def _learn_kinds(self, df: pl.DataFrame) -> dict[str, str]:
        names = self.features if self.features is not None else [c for c in df.columns if c != self.target]
        kinds = {}
        for name in names:
            kind = _kind(df.schema[name])
            if kind is None and self.features is not None:
                raise DataError(
                    "dataset_config.features",
                    f"column '{name}' has type {df.schema[name]}, which cannot be a feature",
                )
            if kind is not None:
                kinds[name] = kind
        if not kinds:
            raise DataError("dataset_config.features", "no usable feature columns")
        return kinds

    @staticmethod
    def _learn_categories(series: pl.Series) -> list[str]:
        counts = series.cast(pl.String).drop_nulls().value_counts(name="_pmls_count")
        # Most frequent first; ties by value so the mapping is the same on every run.
        top = counts.sort(["_pmls_count", series.name], descending=[True, False]).head(MAX_CATEGORIES)
        return top.get_column(series.name).to_list()

    def _learn_classes(self, df: pl.DataFrame) -> list | None:
        if self.task is Task.REGRESSION:
            return None
        if self.classes is not None:
            return sorted(self.classes)
        return sorted(df.get_column(self.target).drop_nulls().unique().to_list())

    def _outputs(self, name: str) -> list[str]:
        if self.kinds_[name] == "datetime":
            return [f"{name}_{part}" for part in DATETIME_PARTS]
        return [name]

    # --- applying ---

    def _exprs(self, name: str, dtype: pl.DataType) -> list[pl.Expr]:
        kind = self.kinds_[name]
        if kind == "numeric":
            return [_as_float(name).alias(name)]
        if kind == "bool":
            return [_bool_as_float(name, dtype).alias(name)]
        if kind == "category":
            codes = {value: float(i) for i, value in enumerate(self.categories_[name])}
            text = pl.col(name).cast(pl.String, strict=False)
            return [text.replace_strict(codes, default=None, return_dtype=pl.Float64).alias(name)]
        return _datetime_parts(name, _as_datetime(name, dtype))

    def transform(self, df: Any) -> np.ndarray:
        """Rows (polars or pandas, extra columns ignored) -> float32 matrix with NaN for missing."""
        frame = _to_polars(df)
        missing = [name for name in self.kinds_ if name not in frame.columns]
        if missing:
            raise DataError("input", f"missing feature columns: {', '.join(missing)}")
        exprs = [e for name in self.kinds_ for e in self._exprs(name, frame.schema[name])]
        return frame.select(exprs).to_numpy().astype(np.float32)

    def encode_target(self, df: Any) -> np.ndarray:
        """Class index (int) for classification, float for regression."""
        series = _to_polars(df).get_column(self.target)
        if self.task is Task.REGRESSION:
            return series.cast(pl.Float64).to_numpy()
        if isinstance(series.dtype, pl.Categorical | pl.Enum):
            series = series.cast(pl.String)
        codes = series.replace_strict(
            self.classes_, list(range(len(self.classes_))), default=None, return_dtype=pl.Int64
        )
        unknown = series.filter(codes.is_null())
        if len(unknown):
            raise DataError(
                "dataset_config.target", f"label {unknown[0]!r} is not one of the classes {self.classes_}"
            )
        return codes.to_numpy()

    @property
    def categorical_indices_(self) -> list[int]:
        """Positions of the encoded categoricals in the matrix, as LightGBM wants them."""
        return [self.feature_names_.index(name) for name in self.categorical_features_]

    # --- persistence ---

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "target": self.target,
            "task": self.task.value,
            "timestamp_column": self.timestamp_column,
            "features": self.features,
            "classes": self.classes,
            "kinds": self.kinds_,
            "categories": self.categories_,
            "feature_names": self.feature_names_,
            "classes_": self.classes_,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessor:
        prep = cls(
            data["target"],
            Task(data["task"]),
            data["timestamp_column"],
            data["features"],
            data.get("classes"),
        )
        prep.kinds_ = dict(data["kinds"])
        prep.categories_ = {name: list(values) for name, values in data["categories"].items()}
        prep.feature_names_ = list(data["feature_names"])
        prep.categorical_features_ = list(prep.categories_)
        prep.classes_ = data["classes_"]
        return prep

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest

from pmls.contracts import Task
from pmls.ml.errors import DataError
from pmls.ml.preprocess import MAX_CATEGORIES, Preprocessor


def fitted(frame: pl.DataFrame, **kw) -> Preprocessor:
    return Preprocessor("y", Task.BINARY, timestamp_column="ts", **kw).fit(frame)


def test_feature_layout(frame):
    prep = fitted(frame)
    assert prep.feature_names_ == [
        "ts_year",
        "ts_month",
        "ts_day",
        "ts_dayofweek",
        "ts_hour",
        "x",
        "count",
        "colour",
        "flag",
        "id",
    ]
    assert prep.categorical_features_ == ["colour", "id"]
    assert prep.categorical_indices_ == [7, 9]
    assert prep.classes_ == [0, 1]
    X = prep.transform(frame)
    assert X.dtype == np.float32 and X.shape == (400, 10)
    assert X[0, :5].tolist() == [2024, 1, 1, 0, 0]  # 2024-01-01 was a Monday
    assert set(np.unique(X[:, 8])) == {0.0, 1.0}


def test_round_trip_gives_identical_transform(frame):
    prep = fitted(frame)
    copy = Preprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    np.testing.assert_array_equal(prep.transform(frame), copy.transform(frame))
    np.testing.assert_array_equal(prep.encode_target(frame), copy.encode_target(frame))
    assert copy.feature_names_ == prep.feature_names_ and copy.classes_ == prep.classes_


def test_unseen_and_missing_categories_are_nan(frame):
    prep = fitted(frame)
    rows = frame.head(3).with_columns(pl.Series("colour", ["purple", None, "red"]))
    X = prep.transform(rows)
    col = prep.feature_names_.index("colour")
    assert np.isnan(X[0, col]) and np.isnan(X[1, col]) and not np.isnan(X[2, col])


def test_category_cap_keeps_the_most_frequent():
    values = ["common"] * 5 + [f"rare{i}" for i in range(MAX_CATEGORIES + 10)]
    df = pl.DataFrame({"c": values, "y": [0, 1] * (len(values) // 2) + [0] * (len(values) % 2)})
    prep = Preprocessor("y", Task.BINARY).fit(df)
    assert len(prep.categories_["c"]) == MAX_CATEGORIES and prep.categories_["c"][0] == "common"


def test_pandas_raw_rows_with_loose_types(frame):
    prep = fitted(frame)
    expected = prep.transform(frame.head(4))
    raw = frame.head(4).drop("y").to_pandas()
    np.testing.assert_array_equal(prep.transform(raw), expected)
    # As a JSON request would carry them: strings for dates, numbers and booleans.
    loose = raw.astype({"ts": str, "x": str, "flag": str, "count": float})
    loose["ts"] = frame.head(4)["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S").to_list()
    np.testing.assert_allclose(prep.transform(loose), expected, rtol=1e-6)
    assert np.isnan(prep.transform(pd.DataFrame({**raw.to_dict("list"), "x": [None] * 4}))[:, 5]).all()


def test_missing_columns_named_and_extra_ignored(frame):
    prep = fitted(frame)
    with pytest.raises(DataError, match="missing feature columns: x, colour"):
        prep.transform(frame.drop("x", "colour"))
    assert prep.transform(frame.with_columns(extra=pl.lit(1))).shape == (400, 10)


def test_explicit_features_and_target_encoding():
    df = pl.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["u", "v", "u"], "y": ["cat", "dog", "bird"]})
    prep = Preprocessor("y", Task.MULTICLASS, features=["b"]).fit(df)
    assert prep.feature_names_ == ["b"] and prep.classes_ == ["bird", "cat", "dog"]
    assert prep.encode_target(df).tolist() == [1, 2, 0]
    with pytest.raises(DataError, match="label 'fish'"):
        prep.encode_target(pl.DataFrame({"y": ["fish"]}))
    reg = Preprocessor("a", Task.REGRESSION).fit(df)
    assert reg.encode_target(df).dtype == np.float64 and reg.classes_ is None


def test_unusable_listed_feature():
    df = pl.DataFrame({"l": [[1], [2]], "y": [0, 1]})
    with pytest.raises(DataError, match="cannot be a feature"):
        Preprocessor("y", Task.BINARY, features=["l"]).fit(df)

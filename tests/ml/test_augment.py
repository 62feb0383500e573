"""Augmentation: shapes, originals first, determinism, categoricals, padding, labels, provenance."""

from __future__ import annotations

import numpy as np
import pytest

from pmls.contracts import Task
from pmls.ml.augment import augment_sequences, augment_tabular


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    X[:, 2] = rng.integers(0, 5, size=60)  # a categorical code column
    X[::5, 0] = np.nan
    y = (X[:, 1] > 0).astype(int)
    return X, y


@pytest.mark.parametrize("method", ["auto", "jitter", "mixup"])
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_shapes_originals_first_and_determinism(table, method, factor):
    X, y = table
    X_in, y_in = X.copy(), y.copy()
    out_X, out_y, weights = augment_tabular(
        X, y, task=Task.BINARY, method=method, seed=1, factor=factor, categorical=[2]
    )
    extra = int(round(factor * len(X)))
    assert out_X.shape == (len(X) + extra, 4) and out_y.shape == (len(X) + extra,) and weights is None
    assert out_X.dtype == X.dtype
    assert np.array_equal(out_X[: len(X)], X, equal_nan=True) and np.array_equal(out_y[: len(y)], y)
    assert np.array_equal(X, X_in, equal_nan=True) and np.array_equal(y, y_in)  # inputs untouched
    again = augment_tabular(X, y, task=Task.BINARY, method=method, seed=1, factor=factor, categorical=[2])
    assert np.array_equal(again[0], out_X, equal_nan=True) and np.array_equal(again[1], out_y)
    other = augment_tabular(X, y, task=Task.BINARY, method=method, seed=2, factor=factor, categorical=[2])
    assert not np.array_equal(other[0], out_X, equal_nan=True)


def test_jitter_is_small_leaves_categoricals_and_nans(table):
    X, y = table
    out_X, out_y, _ = augment_tabular(X, y, task=Task.BINARY, method="jitter", seed=0, categorical=[2])
    synthetic = out_X[len(X) :]
    assert set(np.unique(synthetic[:, 2])) <= set(np.unique(X[:, 2]))  # codes copied exactly
    # Each synthetic row sits next to one input row (its parent), within a few noise stds.
    dist = np.nanmax(np.abs(synthetic[:, None, [1, 3]] - X[None, :, [1, 3]]), axis=2).min(axis=1)
    assert dist.max() < 0.05 * 6 * np.nanstd(X[:, [1, 3]], axis=0).max()
    parent = np.abs(synthetic[:, None, [1, 3]] - X[None, :, [1, 3]]).max(axis=2).argmin(axis=1)
    assert np.array_equal(np.isnan(synthetic[:, 0]), np.isnan(X[parent, 0]))  # NaN stays NaN
    assert np.array_equal(out_y[len(y) :], y[parent])


def test_mixup_labels_stay_within_the_class(table):
    X, y = table
    X = np.nan_to_num(X)
    out_X, out_y, _ = augment_tabular(
        X, y, task=Task.BINARY, method="mixup", seed=0, factor=3, categorical=[2]
    )
    synthetic, labels = out_X[len(X) :], out_y[len(y) :]
    assert set(labels) <= {0, 1}
    for label in (0, 1):
        # Column 1 decides the class (> 0), and a blend of same-class rows stays on its side.
        side = synthetic[labels == label, 1]
        assert np.all(side > 0) if label == 1 else np.all(side <= 0)
    assert set(np.unique(synthetic[:, 2])) <= set(np.unique(X[:, 2]))


def test_mixup_regression_blends_targets_within_parent_range():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    y = np.arange(50)  # integer targets: blends must come back as floats
    out_X, out_y, _ = augment_tabular(X, y, task=Task.REGRESSION, method="mixup", seed=0)
    assert out_y.dtype.kind == "f" and not np.all(out_y[50:] == np.round(out_y[50:]))
    assert out_y[50:].min() >= 0 and out_y[50:].max() <= 49
    assert np.all(out_X[50:].min(axis=0) >= X.min(axis=0)) and np.all(out_X[50:].max(axis=0) <= X.max(axis=0))


def test_sample_weights_follow_their_parents(table):
    X, y = table
    weights = np.where(y == 1, 3.0, 1.0)
    for method in ("jitter", "mixup"):
        _, out_y, out_w = augment_tabular(
            X, y, task=Task.BINARY, method=method, seed=0, sample_weight=weights
        )
        assert np.array_equal(out_w[: len(y)], weights)
        assert np.allclose(out_w, np.where(out_y == 1, 3.0, 1.0))  # same-class parents share a weight


def test_factor_zero_and_bad_method(table):
    X, y = table
    out_X, out_y, _ = augment_tabular(X, y, task=Task.BINARY, factor=0)
    assert np.array_equal(out_X, X, equal_nan=True) and np.array_equal(out_y, y)
    with pytest.raises(ValueError):
        augment_tabular(X, y, task=Task.BINARY, method="smote")


# --- sequences ---


def test_sequences_keep_padding_and_originals():
    rng = np.random.default_rng(0)
    X3 = rng.normal(size=(20, 8, 3))
    X3[:, :3] = np.nan  # left padding, as sequence building yields for short histories
    X3[5, 4, 1] = np.nan  # a missing value inside a real step is not padding
    y = rng.integers(0, 2, size=20)
    out_X, out_y = augment_sequences(X3, y, seed=0, factor=1.5)
    assert out_X.shape == (50, 8, 3) and out_y.shape == (50,)
    assert np.array_equal(out_X[:20], X3, equal_nan=True) and np.array_equal(out_y[:20], y)
    synthetic = out_X[20:]
    assert np.isnan(synthetic[:, :3]).all() and not np.isnan(synthetic[:, 3:]).all(axis=-1).any()
    again = augment_sequences(X3, y, seed=0, factor=1.5)
    assert np.array_equal(again[0], out_X, equal_nan=True)
    # Provenance: every copy is a scaled, slightly noisy version of one input sequence with its label.
    flat_in, flat_out = (
        np.nan_to_num(X3[:, 3:]).reshape(20, -1),
        np.nan_to_num(synthetic[:, 3:]).reshape(30, -1),
    )
    corr = np.corrcoef(flat_out, flat_in)[:30, 30:]
    parent = corr.argmax(axis=1)
    assert corr.max(axis=1).min() > 0.95 and np.array_equal(out_y[20:], y[parent])

from __future__ import annotations

import numpy as np
import pytest

from pmls.ml.errors import DataError
from pmls.ml.sequences import build_sequences


def reference(X, entity, order, seq_len):
    """The definition, row by row: same entity, earlier in (time, position), newest last."""
    out = np.full((len(X), seq_len, X.shape[1]), np.nan, dtype=np.float32)
    for i in range(len(X)):
        past = [j for j in range(len(X)) if entity[j] == entity[i] and (order[j], j) <= (order[i], i)]
        past.sort(key=lambda j: (order[j], j))
        window = X[past[-seq_len:]]
        out[i, seq_len - len(window) :] = window
    return out


def random_rows(n=120, entities=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    entity = rng.choice([f"e{k}" for k in range(entities)], size=n)
    order = rng.integers(0, 40, size=n)  # shuffled rows, with timestamp ties
    return X, entity, order


def test_matches_the_row_by_row_definition():
    X, entity, order = random_rows()
    np.testing.assert_array_equal(build_sequences(X, entity, order, 4), reference(X, entity, order, 4))


def test_each_window_ends_with_its_own_row_whatever_the_input_order():
    X, entity, order = random_rows()
    windows = build_sequences(X, entity, order, 3)
    assert windows.shape == (len(X), 3, 3) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[:, -1], X)


def test_short_history_is_left_padded_with_nan():
    X = np.arange(8, dtype=np.float32).reshape(4, 2)
    windows = build_sequences(X, None, np.array([3, 1, 2, 0]), 3)
    first = windows[3]  # the earliest row: nothing before it
    assert np.isnan(first[:2]).all() and np.array_equal(first[2], X[3])
    np.testing.assert_array_equal(
        windows[0], X[[1, 2, 0]]
    )  # the latest row: its 2 predecessors, oldest first


def test_no_look_ahead():
    X, entity, order = random_rows(seed=1)
    before = build_sequences(X, entity, order, 5)
    later = order > 20
    changed = X.copy()
    changed[later] += 100.0  # rewrite the future
    after = build_sequences(changed, entity, order, 5)
    np.testing.assert_array_equal(after[~later], before[~later])
    assert not np.array_equal(after[later], before[later])


def test_entities_never_mix():
    X, entity, order = random_rows(seed=2)
    ids = np.array([int(e[1:]) for e in entity], dtype=np.float32)
    windows = build_sequences(ids[:, None], entity, order, 6)[:, :, 0]
    real = ~np.isnan(windows)
    assert (windows[real] == np.broadcast_to(ids[:, None], windows.shape)[real]).all()


def test_without_entities_all_rows_form_one_series():
    X = np.arange(5, dtype=np.float32)[:, None]
    windows = build_sequences(X, None, np.array([4, 0, 3, 1, 2]), 2)[:, :, 0]
    # time order of rows: 1, 3, 4, 2, 0
    np.testing.assert_array_equal(windows[0], [2, 0])
    assert np.isnan(windows[1, 0]) and windows[1, 1] == 1


def test_datetime_order():
    X = np.arange(3, dtype=np.float32)[:, None]
    order = np.array(["2024-01-03", "2024-01-01", "2024-01-02"], dtype="datetime64[D]")
    np.testing.assert_array_equal(build_sequences(X, None, order, 3)[0, :, 0], [1, 2, 0])


@pytest.mark.parametrize(
    ("X", "entity", "order", "seq_len"),
    [
        (np.zeros(3), None, np.arange(3), 2),
        (np.zeros((3, 1)), None, np.arange(2), 2),
        (np.zeros((3, 1)), np.zeros(2), np.arange(3), 2),
        (np.zeros((3, 1)), None, np.arange(3), 0),
    ],
)
def test_bad_input_is_refused(X, entity, order, seq_len):
    with pytest.raises(DataError):
        build_sequences(X, entity, order, seq_len)

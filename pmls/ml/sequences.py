"""Windows of past rows per entity, the input of sequential models (the LSTM).

Row i's window holds the rows of its entity at or before it in time, oldest first, ending with row
i itself; missing history is left-padded with all-NaN steps (the LSTM treats those as padding).
Nothing after row i is ever read, so a window carries no look-ahead. Rows with equal timestamps are
ordered by their position in the input: a same-time row above row i counts as earlier.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pmls.ml.errors import DataError


def _sort_order(entity: np.ndarray | None, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows sorted by entity, time, position; the entity group code of each sorted row)."""
    n = len(order)
    groups = np.zeros(n, dtype=np.int64) if entity is None else pd.factorize(np.asarray(entity))[0]
    times = pd.factorize(np.asarray(order), sort=True)[0]  # ranks; works for datetimes and numbers
    perm = np.lexsort((np.arange(n), times, groups))
    return perm, groups[perm]


def build_sequences(X: np.ndarray, entity: np.ndarray | None, order: np.ndarray, seq_len: int) -> np.ndarray:
    """(n, seq_len, features) float32; output row i is the window ending with input row i."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError("input", f"expected a 2-D matrix of rows, got shape {X.shape}")
    n = len(X)
    if len(order) != n or (entity is not None and len(entity) != n):
        raise DataError("input", f"order and entity need one value per row ({n})")
    if seq_len < 1:
        raise DataError("dataset_config.sequence_length", f"must be at least 1, got {seq_len}")
    perm, sorted_groups = _sort_order(entity, order)
    position = np.empty(n, dtype=np.int64)
    position[perm] = np.arange(n)  # where each input row sits in the sorted order
    # First sorted position of each row's entity: a window never reaches below it.
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    group_start = starts[np.searchsorted(starts, position, side="right") - 1]
    out = np.full((n, seq_len, X.shape[1]), np.nan, dtype=np.float32)
    for lag in range(seq_len):
        source = position - lag
        ok = source >= group_start
        out[ok, seq_len - 1 - lag] = X[perm[source[ok]]]
    return out

"""Data augmentation for training rows: jitter and mixup for tables, jitter and scaling for sequences.

Every function returns the input rows first, unchanged, followed by ``round(factor * n)`` synthetic
rows made only from the rows passed in. Callers pass training rows only (a fold's train part, or
the final training split), so nothing synthetic is ever validated or tested on.
"""

from __future__ import annotations

import numpy as np

from pmls.contracts import Task

JITTER_SCALE = 0.05  # noise std as a share of each column's std: small enough to keep labels true
MIXUP_ALPHA = 0.4  # Beta(0.4, 0.4) puts most mass near the parents, some in between
SCALE_STD = 0.1  # sequence magnitude scaling ~ N(1, 0.1)
METHODS = ("auto", "jitter", "mixup")


def _synthetic_count(n: int, factor: float) -> int:
    if factor < 0:
        raise ValueError(f"factor must be >= 0, not {factor}")
    return int(round(factor * n)) if n else 0


def _floats(X) -> np.ndarray:
    # Keep float32 (what preprocessing yields) as float32; anything else becomes float64.
    X = np.asarray(X)
    return X if np.issubdtype(X.dtype, np.floating) else X.astype(np.float64)


def _numeric_mask(width: int, categorical: list[int] | None) -> np.ndarray:
    mask = np.ones(width, dtype=bool)
    mask[list(categorical or [])] = False
    return mask


def _column_std(X: np.ndarray) -> np.ndarray:
    finite = np.isfinite(X).any(axis=0)
    std = np.zeros(X.shape[1])
    if finite.any():
        std[finite] = np.nanstd(X[:, finite], axis=0)
    return std


def _jitter(X: np.ndarray, parents: np.ndarray, numeric: np.ndarray, rng) -> np.ndarray:
    rows = X[parents].copy()
    scale = JITTER_SCALE * _column_std(X) * numeric  # zero for categoricals: codes must stay exact
    rows += rng.normal(size=rows.shape) * scale  # NaN + noise stays NaN
    return rows


def _partners(y: np.ndarray, parents: np.ndarray, task: Task, rng) -> np.ndarray:
    """A second parent per row: any row for regression, a row of the same class otherwise."""
    if task is Task.REGRESSION:
        return rng.integers(0, len(y), size=len(parents))
    partners = np.empty_like(parents)
    for label in np.unique(y[parents]):
        members = np.flatnonzero(y == label)
        slots = np.flatnonzero(y[parents] == label)
        partners[slots] = members[rng.integers(0, len(members), size=len(slots))]
    return partners


def _mix(first: np.ndarray, second: np.ndarray, lam: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    lam = lam[:, None]
    mixed = lam * first + (1 - lam) * second
    dominant = np.where(lam >= 0.5, first, second)
    # Categoricals, and values one parent lacks, come whole from the parent that dominates.
    take = ~numeric[None, :] | np.isnan(first) | np.isnan(second)
    mixed[take] = dominant[take]
    return mixed


def augment_tabular(
    X: np.ndarray,
    y: np.ndarray,
    *,
    task: Task,
    method: str = "auto",
    seed: int = 0,
    factor: float = 1.0,
    categorical: list[int] | None = None,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(X, y, sample_weight) with synthetic rows appended; weights are None unless given.

    jitter: copies of random rows with Gaussian noise (std 0.05 x column std) on numeric columns.
    mixup: convex blends (lambda ~ Beta(0.4, 0.4)) of row pairs; for classification both parents
    share a class, so labels stay hard. ``auto`` is jitter. A synthetic row inherits the weight of
    its parent (mixup: the blend of both parents' weights).
    """
    if method not in METHODS:
        raise ValueError(f"unknown augmentation method '{method}'; use one of {', '.join(METHODS)}")
    X, y = _floats(X), np.asarray(y)
    rng = np.random.default_rng(seed)
    parents = rng.integers(0, len(X), size=_synthetic_count(len(X), factor))
    numeric = _numeric_mask(X.shape[1], categorical)
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if method == "mixup":
        partners = _partners(y, parents, task, rng)
        lam = rng.beta(MIXUP_ALPHA, MIXUP_ALPHA, size=len(parents))
        new_X = _mix(X[parents], X[partners], lam, numeric)
        new_y = lam * y[parents] + (1 - lam) * y[partners] if task is Task.REGRESSION else y[parents]
        new_w = None if weights is None else lam * weights[parents] + (1 - lam) * weights[partners]
    else:
        new_X, new_y = _jitter(X, parents, numeric, rng), y[parents]
        new_w = None if weights is None else weights[parents]
    out_w = None if weights is None else np.concatenate([weights, new_w])
    # np.concatenate promotes: a regression mixup of integer targets comes back as floats.
    return np.concatenate([X, new_X.astype(X.dtype)]), np.concatenate([y, new_y]), out_w


def augment_sequences(
    X3: np.ndarray, y: np.ndarray, *, seed: int = 0, factor: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, steps, features) sequences plus jittered, magnitude-scaled copies of random ones.

    Each copy is scaled by one factor ~ N(1, 0.1) and gets noise of 0.05 x each feature's std.
    Padding steps (all-NaN) stay all-NaN, so the model's masking still sees them as padding.
    """
    X3, y = _floats(X3), np.asarray(y)
    rng = np.random.default_rng(seed)
    parents = rng.integers(0, len(X3), size=_synthetic_count(len(X3), factor))
    copies = X3[parents].copy()
    std = _column_std(X3.reshape(-1, X3.shape[-1]))
    scale = rng.normal(1.0, SCALE_STD, size=(len(parents), 1, 1))
    noise = rng.normal(size=copies.shape) * JITTER_SCALE * std
    padding = np.isnan(copies).all(axis=-1, keepdims=True)
    copies = np.where(padding, np.nan, copies * scale + noise)
    return np.concatenate([X3, copies.astype(X3.dtype)]), np.concatenate([y, y[parents]])

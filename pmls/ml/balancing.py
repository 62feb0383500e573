"""Class balancing for training rows: per-class weights, or random oversampling.

Labels are integer codes 0..num_classes-1 (as training encodes them). Callers pass training rows
only (a CV fold's train part, or the final training split): validation and test keep their natural
class mix, or their metrics would describe a population that does not exist.
"""

from __future__ import annotations

import numpy as np


def _codes(y: np.ndarray, num_classes: int) -> np.ndarray:
    codes = np.asarray(y)
    if codes.ndim != 1:
        raise ValueError("labels must be a 1-d array of class codes")
    if not np.issubdtype(codes.dtype, np.integer) and not np.array_equal(codes, np.round(codes)):
        raise ValueError("labels must be integer class codes (0..num_classes-1)")
    codes = codes.astype(np.int64)
    if len(codes) and (codes.min() < 0 or codes.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return codes


def class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Weight per class, n / (k * count): every present class then carries n / k in total.

    k counts the classes present in ``y``, so the weights still sum to n when a fold lacks a class;
    an absent class gets weight 0 (it has no rows to weigh).
    """
    codes = _codes(y, num_classes)
    counts = np.bincount(codes, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = len(codes) / (present.sum() * counts[present])
    return weights


def sample_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-row weights for ``lgb.Dataset(weight=...)`` and the like."""
    return class_weights(y, num_classes)[_codes(y, num_classes)]


def oversample_indices(y: np.ndarray, *, seed: int) -> np.ndarray:
    """Row positions into ``y`` after random oversampling: all originals first, then repeats.

    Positions rather than rows, so a caller can resample any aligned array (a polars frame, 3-d
    sequences, weights) and can check that every output row comes from the rows passed in.
    """
    from imblearn.over_sampling import RandomOverSampler

    labels = np.asarray(y)
    sampler = RandomOverSampler(random_state=seed)
    # Resample the positions themselves: imbalanced-learn then never inspects (or rejects) features.
    positions, _ = sampler.fit_resample(np.arange(len(labels)).reshape(-1, 1), labels)
    return positions.ravel().astype(np.int64)


def oversample(X: np.ndarray, y: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Repeat rows of the smaller classes until every class is as large as the largest.

    Returns new arrays (the inputs are left as they were); NaNs are copied like any value.
    """
    positions = oversample_indices(y, seed=seed)
    return np.array(X)[positions], np.array(y)[positions]

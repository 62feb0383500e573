"""Feature selection from the training frame alone, on the job's CV plan.

Stage 1 (cheap, exact): drop constant columns, exact duplicates and near-identical numeric columns
(|Pearson| or |Spearman| > 0.995 with the same missing rows), keeping the first of each set.

Stage 2 (null importances): on the training rows of up to three folds of the plan, a small LightGBM
is fit on the real target and NULL_RUNS times on a shuffled one. A feature whose share of splits
under the real target (mean over folds) is at most NULL_MARGIN x the median of its shares under
shuffled targets is noise: with real signal to learn, the model turns to it clearly less than it
does when there is nothing to learn. Split counts, not gain: gain piles onto a few strong columns,
so useful but redundant columns would look like noise; the margin spares weak-but-real columns
(on breast_cancer + 20 noise columns: about 2 noise columns kept, 20 of 27 distinct real ones).
Only rows at the folds' training positions are fit on; validation rows never inform selection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pmls.contracts import Task
from pmls.ml.cv import CVPlan
from pmls.ml.zoo.lightgbm import lightgbm_params

NEAR_IDENTICAL = 0.995
MAX_FOLDS = 3
NULL_RUNS = 3
NULL_MARGIN = 0.6
ROUNDS = 100
SMALL_MODEL = {"num_leaves": 15, "num_threads": 1, "min_data_in_leaf": 20}


@dataclass
class SelectionReport:
    kept: list[str]
    dropped: dict[str, str] = field(default_factory=dict)  # feature -> why

    def to_dict(self) -> dict:
        return {"kept": list(self.kept), "dropped": dict(self.dropped)}


# --- stage 1: constant, duplicate, near-identical --------------------------------------------


def _subsample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, size=limit, replace=False))


def _is_constant(column: np.ndarray) -> bool:
    missing = np.isnan(column)
    if missing.all():
        return True
    # One value plus some NaNs is not constant: whether a value is missing can carry signal.
    return not missing.any() and np.all(column == column[0])


def _spearman_ready(X: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(X, axis=0)


def _correlations(X: np.ndarray) -> np.ndarray:
    """max(|Pearson|, |Spearman|) between columns, over rows where all of them are present."""
    rows = ~np.isnan(X).any(axis=1)
    if rows.sum() < 3:
        return np.zeros((X.shape[1], X.shape[1]))
    values = X[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = np.corrcoef(values, rowvar=False)
        spearman = np.corrcoef(_spearman_ready(values), rowvar=False)
    return np.nan_to_num(np.maximum(np.abs(pearson), np.abs(spearman)).reshape(X.shape[1], X.shape[1]))


def _near_identical(X: np.ndarray, names: list[str], keep: list[int], numeric: set[int]) -> dict[str, str]:
    """Among kept numeric columns with the same missing rows, drop later ones that track an earlier one."""
    dropped: dict[str, str] = {}
    masks: dict[bytes, list[int]] = {}
    for j in keep:
        if j in numeric:
            masks.setdefault(np.packbits(np.isnan(X[:, j])).tobytes(), []).append(j)
    for columns in masks.values():
        corr = _correlations(X[:, columns]) if len(columns) > 1 else None
        survivors: list[int] = []
        for a, j in enumerate(columns):
            match = next((b for b in survivors if corr[a, b] > NEAR_IDENTICAL), None)
            if match is None:
                survivors.append(a)
            else:
                dropped[names[j]] = f"near-identical to {names[columns[match]]} (corr {corr[a, match]:.3f})"
    return dropped


def _stage_one(X: np.ndarray, names: list[str], categorical: set[int]) -> dict[str, str]:
    dropped: dict[str, str] = {}
    seen: dict[bytes, int] = {}
    keep: list[int] = []
    for j, name in enumerate(names):
        column = X[:, j]
        if _is_constant(column):
            dropped[name] = "constant" if not np.isnan(column).all() else "constant (all missing)"
            continue
        key = np.nan_to_num(column, nan=np.inf).tobytes()  # NaN bit patterns vary; inf does not
        if key in seen:
            dropped[name] = f"duplicate of {names[seen[key]]}"
            continue
        seen[key] = j
        keep.append(j)
    numeric = set(range(len(names))) - categorical
    dropped.update(_near_identical(X, names, keep, numeric))
    return dropped


# --- stage 2: null importances on the folds' training rows -----------------------------------


def _fold_rows(plan: CVPlan, n: int) -> list[np.ndarray]:
    # The last folds: for time series they train on the most (and most recent) history.
    if not plan.folds:
        return [np.arange(n)]  # CV off: the training frame is still fair to learn from
    return [fold.train for fold in plan.folds[-MAX_FOLDS:]]


def _split_share(X, y, task: Task, num_classes: int, categorical: list[int], seed: int) -> np.ndarray:
    import lightgbm as lgb

    params = lightgbm_params(task, num_classes, {**SMALL_MODEL, "verbosity": -1}, seed=seed)
    data = lgb.Dataset(X, y, categorical_feature=categorical or "auto", free_raw_data=True)
    booster = lgb.train(params, data, num_boost_round=ROUNDS)
    splits = booster.feature_importance("split").astype(np.float64)
    return splits / max(splits.sum(), 1.0)


def _null_shares(
    X, y, columns: list[int], task: Task, categorical: set[int], rows_list, seed: int, max_rows: int
):
    """(mean real share per column, median null share per column) over the chosen folds."""
    rng = np.random.default_rng(seed)
    cats = [i for i, j in enumerate(columns) if j in categorical]
    num_classes = int(np.max(y)) + 1 if task is not Task.REGRESSION else 0
    real, null = [], []
    for rows in rows_list:
        rows = rows[_subsample(len(rows), max_rows, rng)]
        X_fold, y_fold = X[np.ix_(rows, columns)], y[rows]
        real.append(_split_share(X_fold, y_fold, task, num_classes, cats, seed))
        for run in range(NULL_RUNS):
            null.append(
                _split_share(X_fold, rng.permutation(y_fold), task, num_classes, cats, seed + run + 1)
            )
    return np.mean(real, axis=0), np.median(null, axis=0)


def select_features(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    *,
    task: Task,
    plan: CVPlan,
    seed: int = 0,
    categorical: list[int] | None = None,
    max_rows: int = 50_000,
) -> SelectionReport:
    """Which columns of the training matrix to keep; ``y`` is integer codes for classification."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    cats = set(categorical or [])
    rng = np.random.default_rng(seed)
    sample = _subsample(len(X), max_rows, rng)
    dropped = _stage_one(X[sample], names, cats)
    columns = [j for j, name in enumerate(names) if name not in dropped]
    if not columns:  # every column constant: keep the first so a model can still be built
        columns = [0]
        dropped.pop(names[0])
    if len(columns) > 1:
        real, null = _null_shares(X, y, columns, task, cats, _fold_rows(plan, len(X)), seed, max_rows)
        noise = real <= NULL_MARGIN * null
        if noise.all():
            noise[np.argmax(real - null)] = False  # never drop everything: keep the best of a bad lot
        for i in np.flatnonzero(noise):
            dropped[names[columns[i]]] = (
                f"fewer splits than under a shuffled target (share {real[i]:.4f} vs null {null[i]:.4f})"
            )
    kept = [name for name in names if name not in dropped]
    return SelectionReport(kept, {name: dropped[name] for name in names if name in dropped})

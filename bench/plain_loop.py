"""The in-process baselines of ``bench.quality``: the plain Optuna-LightGBM loop, LightGBM defaults and FLAML.

Each gets the visible rows as features built the way the service's preprocessor sees them (:func:`frames`)
and returns its predictions for the hidden rows; ``bench.quality`` scores them. Nothing here reads the hidden
labels except :func:`frames`, which hands them to the scorer only.

* **Optuna-LightGBM** (:func:`optuna_lightgbm`), exactly: ``optuna.samplers.TPESampler(seed=seed)``,
  ``study.optimize(objective, timeout=budget)``; each trial one 5-fold ``lgb.cv`` (``StratifiedKFold``
  shuffled for classification, ``KFold`` shuffled for regression, ``TimeSeriesSplit(5)`` over the rows sorted by
  time for a time-ordered set), at most 1000 rounds, early stopping after 50, on the task's primary metric
  (AUC, multi log loss, RMSE), over learning_rate 0.01-0.3 (log), num_leaves 7-255 (log), min_data_in_leaf
  2-100 (log), feature_fraction and bagging_fraction 0.4-1 (bagging_freq 1), lambda_l1 and lambda_l2
  1e-8-10 (log). Then one refit on all visible rows with the best trial's best-iteration rounds (``lgb.cv``
  stops on the fold-mean curve, so that is the folds' mean best iteration).
* **LightGBM defaults** (:func:`lightgbm_defaults`): ``LGBMClassifier()`` / ``LGBMRegressor()`` with only
  ``random_state``, ``n_jobs`` and ``verbose`` set, fitted on all visible rows.
* **FLAML** (:func:`flaml`): ``AutoML().fit(X, y, task, time_budget=budget, metric, seed, n_jobs)`` on all
  visible rows (it validates internally).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl

from pmls.contracts import Task

DATETIME_PARTS = ("year", "month", "day", "dayofweek", "hour")  # as the service's preprocessor derives them
MAX_ROUNDS = 1000
EARLY_STOPPING = 50
FOLDS = 5
LGB_METRIC = {Task.BINARY: "auc", Task.MULTICLASS: "multi_logloss", Task.REGRESSION: "rmse"}
FLAML_METRIC = {Task.BINARY: "roc_auc", Task.MULTICLASS: "log_loss", Task.REGRESSION: "rmse"}


@dataclass
class Frames:
    """A set's visible rows as features and labels (sorted by time when the set is time-ordered), and the
    hidden rows' features and labels (the labels for the scorer only)."""

    task: Task
    classes: list | None  # sorted labels: y holds indices into it (classification)
    X: pd.DataFrame
    y: np.ndarray
    X_hidden: pd.DataFrame
    y_hidden: np.ndarray
    time_ordered: bool


@dataclass
class Fit:
    predicted: np.ndarray  # hidden rows: values, or an n x len(classes) probability matrix
    wall: float  # seconds of the method's own fitting (search + refit; no prediction)
    note: str = ""


def _features(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    exprs = []
    for c in columns:
        dtype = frame.schema[c]
        if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
            moment = pl.col(c)
            parts = {
                "year": moment.dt.year(),
                "month": moment.dt.month(),
                "day": moment.dt.day(),
                "dayofweek": moment.dt.weekday() - 1,
                "hour": moment.dt.hour() if dtype != pl.Date else None,
            }
            exprs += [
                parts[p].cast(pl.Float64).alias(f"{c}_{p}") for p in DATETIME_PARTS if parts[p] is not None
            ]
        elif dtype == pl.Boolean:
            exprs.append(pl.col(c).cast(pl.Int8))
        elif dtype.is_numeric() or dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            exprs.append(pl.col(c))
        else:  # Decimal, Duration, ...: as a number where polars can
            exprs.append(pl.col(c).cast(pl.Float64, strict=False))
    return frame.select(exprs)


def frames(bs) -> Frames:
    """``bs`` is a ``bench.datasets.BenchSet``. Strings become pandas categories with the visible rows'
    vocabulary (unseen values missing), booleans 0/1, a date-time its year / month / day / weekday / hour; the
    entity column is dropped (the service's default features)."""
    visible = bs.visible.filter(pl.col(bs.target).is_not_null())
    hidden = bs.hidden.filter(pl.col(bs.target).is_not_null())
    time_ordered = bs.timestamp is not None or "time" in bs.tags
    if bs.timestamp is not None:
        visible = visible.sort(bs.timestamp, maintain_order=True)
    columns = [c for c in visible.columns if c not in (bs.target, bs.entity)]
    vocab = {
        c: sorted(visible.get_column(c).drop_nulls().cast(pl.String).unique().to_list())
        for c in columns
        if visible.schema[c] in (pl.String, pl.Categorical) or isinstance(visible.schema[c], pl.Enum)
    }
    X = {}
    for name, frame in (("visible", visible), ("hidden", hidden)):
        pdf = _features(frame, columns).to_pandas()
        for c, categories in vocab.items():
            pdf[c] = pd.Categorical(pdf[c].astype(object), categories=categories)
        X[name] = pdf
    classes = None
    if bs.task is Task.REGRESSION:
        y = visible.get_column(bs.target).cast(pl.Float64).to_numpy()
        y_hidden = hidden.get_column(bs.target).cast(pl.Float64).to_numpy()
    else:
        classes = sorted(
            set(visible.get_column(bs.target).to_list()) | set(hidden.get_column(bs.target).to_list())
        )
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[v] for v in visible.get_column(bs.target).to_list()], dtype=np.int64)
        y_hidden = np.array([index[v] for v in hidden.get_column(bs.target).to_list()], dtype=np.int64)
    return Frames(bs.task, classes, X["visible"], y, X["hidden"], y_hidden, time_ordered)


def full_proba(proba: np.ndarray, seen, k: int) -> np.ndarray:
    """Columns for every class index, whichever classes a model saw (a class only in hidden rows: 0)."""
    out = np.zeros((proba.shape[0], k))
    out[:, np.asarray(seen, dtype=np.int64)] = proba
    return out


def lightgbm_defaults(f: Frames, seed: int, cores: int) -> Fit:
    import lightgbm as lgb

    started = time.perf_counter()
    if f.task is Task.REGRESSION:
        model = lgb.LGBMRegressor(random_state=seed, n_jobs=cores, verbose=-1).fit(f.X, f.y)
        wall = time.perf_counter() - started
        return Fit(model.predict(f.X_hidden), wall)
    model = lgb.LGBMClassifier(random_state=seed, n_jobs=cores, verbose=-1).fit(f.X, f.y)
    wall = time.perf_counter() - started
    return Fit(full_proba(model.predict_proba(f.X_hidden), model.classes_, len(f.classes)), wall)


def _folds(f: Frames, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

    if f.time_ordered:  # f.X is sorted by time already
        splitter = TimeSeriesSplit(FOLDS)
    elif f.task is Task.REGRESSION:
        splitter = KFold(FOLDS, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class with fewer than 5 rows
        return list(splitter.split(f.X, f.y))


def _base_params(f: Frames, seed: int, cores: int) -> dict:
    params = {"metric": LGB_METRIC[f.task], "verbosity": -1, "seed": seed, "num_threads": cores}
    if f.task is Task.REGRESSION:
        return params | {"objective": "regression"}
    if f.task is Task.BINARY:
        return params | {"objective": "binary"}
    return params | {"objective": "multiclass", "num_class": len(f.classes)}


@dataclass
class Search:
    """The plain loop's search, done: the best trial's full parameters and rounds."""

    params: dict
    rounds: int
    trials: int
    best_cv: float
    fold_rows: float  # mean training rows of a fold (what the rounds were found on)


def search(f: Frames, budget: float, seed: int, cores: int) -> Search:
    """The plain loop's search on ``f`` (the module docstring's exact loop), without its refit."""
    import lightgbm as lgb
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = _base_params(f, seed, cores)
    folds = _folds(f, seed)
    key = f"valid {LGB_METRIC[f.task]}-mean"

    def objective(trial: optuna.Trial) -> float:
        params = base | {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 7, 255, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 2, 100, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.4, 1.0),
            "bagging_freq": 1,
            "lambda_l1": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
        }
        result = lgb.cv(
            params,
            lgb.Dataset(f.X, f.y),
            num_boost_round=MAX_ROUNDS,
            folds=folds,
            callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)],
        )
        trial.set_user_attr("rounds", len(result[key]))
        return float(result[key][-1])

    study = optuna.create_study(
        direction="maximize" if f.task is Task.BINARY else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    study.optimize(objective, timeout=budget)
    best = study.best_trial
    return Search(
        params=base | best.params | {"bagging_freq": 1},
        rounds=int(best.user_attrs["rounds"]),
        trials=len(study.trials),
        best_cv=float(best.value),
        fold_rows=float(np.mean([len(train) for train, _ in folds])),
    )


def optuna_lightgbm(f: Frames, budget: float, seed: int, cores: int) -> Fit:
    import lightgbm as lgb

    started = time.perf_counter()
    found = search(f, budget, seed, cores)
    booster = lgb.train(found.params, lgb.Dataset(f.X, f.y), num_boost_round=found.rounds)
    wall = time.perf_counter() - started
    predicted = booster.predict(f.X_hidden)
    if f.task is Task.BINARY:
        predicted = np.column_stack([1.0 - predicted, predicted])
    return Fit(
        np.asarray(predicted, dtype=np.float64),
        wall,
        f"{found.trials} trials, best CV {found.best_cv:.4f} at {found.rounds} rounds",
    )


def flaml_available() -> bool:
    try:
        import flaml.automl  # noqa: F401
    except ImportError:
        return False
    return True


def flaml(f: Frames, budget: float, seed: int, cores: int) -> Fit:
    from flaml import AutoML

    automl = AutoML()
    logging.getLogger("flaml.automl.logger").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        automl.fit(
            f.X,
            f.y,
            task="regression" if f.task is Task.REGRESSION else "classification",
            time_budget=budget,
            metric=FLAML_METRIC[f.task],
            seed=seed,
            n_jobs=cores,
            verbose=0,
        )
        wall = time.perf_counter() - started
        if f.task is Task.REGRESSION:
            predicted = np.asarray(automl.predict(f.X_hidden), dtype=np.float64)
        else:
            predicted = full_proba(automl.predict_proba(f.X_hidden), automl.classes_, len(f.classes))
    return Fit(predicted, wall, f"best {automl.best_estimator}, {len(automl.config_history)} configs")

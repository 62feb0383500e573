"""One cross-validation plan per job.

The plan is data (row positions), not a splitter object: tuning, out-of-fold predictions, ensemble
weights and feature selection all read the same folds, and it survives a JSON round trip through
workflow history. Positions index the training frame as given (not as sorted); a time-series plan that
``spans_validation`` continues past it into the validation period (positions ``len(train) + i``), so the
search chooses parameters and rounds on the latest rows before the test period, as a forecaster would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from pmls.contracts import Task
from pmls.contracts.durations import parse_duration
from pmls.ml.errors import DataError

STRATEGIES = ("auto", "timeseries", "stratified", "kfold", "group", "none")
MIN_FOLD_ROWS = 10  # as data.MIN_SPLIT_ROWS: fewer validation rows give a metric that is mostly noise
FOLDS = "validation_config.cv_folds"
STRATEGY = "validation_config.cv_strategy"


def _frozen(positions) -> np.ndarray:
    array = np.sort(np.asarray(positions, dtype=np.int64))
    array.setflags(write=False)  # a plan is shared by many consumers: none may edit it in place
    return array


@dataclass(frozen=True, eq=False)
class Fold:
    train: np.ndarray
    valid: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", _frozen(self.train))
        object.__setattr__(self, "valid", _frozen(self.valid))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Fold)
            and np.array_equal(self.train, other.train)
            and np.array_equal(self.valid, other.valid)
        )

    __hash__ = None  # arrays are not hashable


@dataclass(frozen=True)
class CVPlan:
    strategy: str
    folds: tuple[Fold, ...]
    description: str
    spans_validation: bool = False  # positions run on from the training rows into the validation rows

    def to_dict(self) -> dict:
        folds = [{"train": f.train.tolist(), "valid": f.valid.tolist()} for f in self.folds]
        return {
            "strategy": self.strategy,
            "folds": folds,
            "description": self.description,
            "spans_validation": self.spans_validation,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CVPlan:
        folds = tuple(Fold(np.asarray(f["train"]), np.asarray(f["valid"])) for f in d["folds"])
        return cls(d["strategy"], folds, d["description"], bool(d.get("spans_validation", False)))


# --- choosing the strategy -------------------------------------------------------------------


def _resolve(strategy: str, task: Task, timestamp_column: str | None, entity_column: str | None) -> str:
    if strategy not in STRATEGIES:
        raise DataError(STRATEGY, f"unknown strategy '{strategy}'; use one of {', '.join(STRATEGIES)}")
    if strategy != "auto":
        return strategy
    if timestamp_column:
        return "timeseries"  # time order outranks entities: validating on the past is the worse leak
    if entity_column:
        return "group"
    return "kfold" if task is Task.REGRESSION else "stratified"


def _check_rows(n: int, folds: int, blocks: int) -> None:
    need = blocks * MIN_FOLD_ROWS
    if n < need:
        raise DataError(FOLDS, f"{folds} folds need at least {need} rows; the training period has {n}")


def _labels(train: pl.DataFrame, target: str) -> np.ndarray:
    # Dense codes: StratifiedKFold needs comparable labels, and nulls / mixed types compare badly.
    return train.get_column(target).rank("dense").fill_null(0).to_numpy()


# --- shuffled strategies ---------------------------------------------------------------------


def _kfold(n: int, folds: int, seed: int) -> list[tuple]:
    from sklearn.model_selection import KFold

    return list(KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n)))


def _stratified(labels: np.ndarray, folds: int, seed: int) -> tuple[list[tuple], str]:
    """Stratified folds; a class too rare for ``folds`` lowers the fold count instead of failing."""
    from sklearn.model_selection import StratifiedKFold

    values, counts = np.unique(labels, return_counts=True)
    rarest = int(counts.min())
    if rarest < 2:
        note = f"; a class has 1 row, so plain shuffled {folds}-fold (not stratified)"
        return _kfold(len(labels), folds, seed), note
    note = ""
    if rarest < folds:
        note = f"; {folds} folds asked, {rarest} used: the rarest class has {rarest} rows"
        folds = rarest
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels)), note


def _group(train: pl.DataFrame, entity: str | None, labels, folds: int, seed: int) -> list[tuple]:
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    if not entity:
        raise DataError(STRATEGY, "group needs an entity_column (dataset_config.entity_column)")
    if entity not in train.columns:
        raise DataError("dataset_config.entity_column", f"column '{entity}' not in the data")
    groups = train.get_column(entity).rank("dense").fill_null(0).to_numpy()  # null: one more group
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise DataError(
            FOLDS,
            f"{folds} folds need at least {folds} entities in '{entity}'; the training period has {n_groups}",
        )
    if labels is None:
        splitter = GroupKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), labels, groups))


# --- time series -----------------------------------------------------------------------------


def _gap(gap: str | None) -> timedelta:
    if not gap:
        return timedelta(0)
    try:
        return parse_duration(gap)
    except ValueError as exc:
        raise DataError("dataset_config.gap", str(exc)) from exc


def _times(train: pl.DataFrame, column: str | None) -> pl.Series:
    if not column:
        raise DataError(STRATEGY, "timeseries needs a timestamp_column (dataset_config.timestamp_column)")
    if column not in train.columns:
        raise DataError("dataset_config.timestamp_column", f"column '{column}' not in the data")
    times = train.get_column(column)
    if times.dtype == pl.String:
        times = times.str.to_datetime(strict=False)
    elif times.dtype == pl.Date:
        times = times.cast(pl.Datetime("us"))  # so a gap of hours subtracts exactly
    if not (times.dtype.is_temporal() or times.dtype.is_numeric()):
        raise DataError("dataset_config.timestamp_column", f"'{column}' has type {times.dtype}, not a time")
    if times.null_count():
        raise DataError(
            "dataset_config.timestamp_column", f"{times.null_count()} rows of '{column}' have no time"
        )
    return times


def _block_starts(ordered: pl.Series, folds: int) -> list:
    """Start time of each validation block: TimeSeriesSplit's cut points, taken as times.

    A block holds every row at or after its start time, so rows sharing a time never straddle a cut.
    """
    n = len(ordered)
    size = n // (folds + 1)
    starts = [ordered[n - (folds - i) * size] for i in range(folds)]
    if len(set(starts)) < folds:
        raise DataError(
            FOLDS,
            f"{folds} time-series folds need {folds + 1} distinct times to cut at; too many rows share one",
        )
    return starts


def _timeseries(train: pl.DataFrame, column: str | None, folds: int, gap: str | None) -> tuple[list, str]:
    times = _times(train, column)
    gap_delta = _gap(gap)
    if gap_delta and not times.dtype.is_temporal():
        raise DataError("dataset_config.gap", f"a gap needs a date-time column; '{column}' is {times.dtype}")
    starts = _block_starts(times.sort(), folds)
    pairs = []
    for i, start in enumerate(starts):
        valid = times >= start
        if i + 1 < folds:
            valid = valid & (times < starts[i + 1])
        horizon = start - gap_delta if gap_delta else start  # rows within the gap feed neither side
        train_rows = (times < horizon).arg_true().to_numpy()
        if len(train_rows) < MIN_FOLD_ROWS:
            field = "dataset_config.gap" if gap_delta else FOLDS
            raise DataError(
                field, f"time-series fold {i + 1} keeps {len(train_rows)} training rows before {start}"
            )
        pairs.append((train_rows, valid.arg_true().to_numpy()))
    note = f", gap {gap}" if gap_delta else ""
    return pairs, f"expanding-window time-series {folds}-fold over {column}{note}"


def _timeseries_into_validation(
    train: pl.DataFrame, validation: pl.DataFrame, column: str | None, folds: int, gap: str | None
) -> tuple[list, str]:
    """``folds - 1`` expanding-window folds in the training period, then the validation period as the last
    fold, trained on every training row before it (less the gap)."""
    pairs, _ = _timeseries(train, column, folds - 1, gap)
    times, valid_times = _times(train, column), _times(validation, column)
    horizon = valid_times.min()
    gap_delta = _gap(gap)
    if gap_delta:
        horizon = horizon - gap_delta
    train_rows = (times < horizon).arg_true().to_numpy()
    if len(train_rows) < MIN_FOLD_ROWS:
        raise DataError(
            "dataset_config.gap" if gap_delta else FOLDS,
            f"the validation fold keeps {len(train_rows)} training rows before {horizon}",
        )
    pairs.append((train_rows, train.height + np.arange(validation.height)))
    note = f", gap {gap}" if gap_delta else ""
    how = (
        f"expanding-window time-series {folds}-fold over {column}{note}: {folds - 1} in the training period, "
        "the last on the validation period"
    )
    return pairs, how


# --- the plan --------------------------------------------------------------------------------


def plan_cv(
    train: pl.DataFrame,
    *,
    validation: pl.DataFrame | None = None,
    target: str,
    task: Task,
    strategy: str = "auto",
    folds: int = 5,
    timestamp_column: str | None = None,
    entity_column: str | None = None,
    gap: str | None = None,
    seed: int = 0,
) -> CVPlan:
    """The folds every later step uses; ``none`` gives zero folds (CV skipped). Given the ``validation``
    period, a time-series plan validates its last fold on it (``spans_validation``)."""
    chosen = _resolve(strategy, task, timestamp_column, entity_column)
    if chosen == "none":
        return CVPlan("none", (), "cross-validation off")
    if folds < 2:
        raise DataError(FOLDS, f"cross-validation needs at least 2 folds, not {folds}")
    n = train.height
    _check_rows(n, folds, folds + 1 if chosen == "timeseries" else folds)
    classify = task is not Task.REGRESSION
    labels = _labels(train, target) if classify else None
    spans = False
    if chosen == "timeseries" and validation is not None and validation.height >= MIN_FOLD_ROWS:
        pairs, how = _timeseries_into_validation(train, validation, timestamp_column, folds, gap)
        spans = True
    elif chosen == "timeseries":
        pairs, how = _timeseries(train, timestamp_column, folds, gap)
    elif chosen == "group":
        pairs = _group(train, entity_column, labels, folds, seed)
        how = f"{'stratified ' if classify else ''}group {folds}-fold by {entity_column} (seed {seed})"
    elif chosen == "stratified" and classify:
        pairs, note = _stratified(labels, folds, seed)
        how = f"stratified {len(pairs)}-fold (seed {seed}){note}"
    else:
        pairs = _kfold(n, folds, seed)
        note = "; regression, so not stratified" if chosen == "stratified" else ""
        how = f"shuffled {folds}-fold (seed {seed}){note}"
    plan = CVPlan(chosen, tuple(Fold(t, v) for t, v in pairs), how, spans)
    _check_plan(plan)
    return plan


def _check_plan(plan: CVPlan) -> None:
    for i, fold in enumerate(plan.folds, start=1):
        if len(fold.valid) == 0 or len(fold.train) == 0:
            raise DataError(FOLDS, f"fold {i} of {plan.description} is empty; use fewer folds")

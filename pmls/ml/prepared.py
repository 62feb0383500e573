"""A job's data, prepared once: the preprocessor fitted on the training period only, the CV plan (one split
specification per job), feature selection on its folds, and the inputs every trial and the final fit reuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from pmls.contracts import DatasetConfig, Task, ValidationConfig
from pmls.ml.cv import CVPlan, plan_cv
from pmls.ml.data import Splits
from pmls.ml.errors import DataError
from pmls.ml.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC
from pmls.ml.preprocess import Preprocessor
from pmls.ml.selection import SelectionReport, select_features
from pmls.ml.sequences import build_sequences

SPLITS = ("train", "validation", "test")
METRICS = {
    Task.BINARY: {"roc_auc", "log_loss", "accuracy", "balanced_accuracy", "f1", "brier"},
    Task.MULTICLASS: {"log_loss", "accuracy", "balanced_accuracy", "f1", "roc_auc"},
    Task.REGRESSION: {"rmse", "mae", "r2", "mape"},
}


def resolve_metric(task: Task, metric: str | None) -> str:
    if metric is None:
        return PRIMARY_METRIC[task]
    if metric not in METRICS[task]:
        raise DataError(
            "validation_config.metric",
            f"{metric!r} is not a {task.value} metric; choose one of {', '.join(sorted(METRICS[task]))}",
        )
    return metric


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER


@dataclass
class Prepared:
    """Everything a trial needs, fitted on training rows only."""

    preprocessor: Preprocessor
    task: Task
    classes: list | None
    metric: str
    kept: list[int]
    plan: CVPlan
    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    entity: dict[str, np.ndarray] | None = None
    order: dict[str, np.ndarray] | None = None
    selection: SelectionReport | None = None
    _windows: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return [self.preprocessor.feature_names_[i] for i in self.kept]

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    @property
    def categorical(self) -> dict[int, int]:
        """Column of the kept matrix -> number of known categories."""
        prep, out = self.preprocessor, {}
        for name in prep.categorical_features_:
            index = prep.feature_names_.index(name)
            if index in self.kept:
                out[self.kept.index(index)] = len(prep.categories_[name])
        return out

    def cv_rows(self, seq_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The inputs and labels the plan's positions index: the training rows, then (when the plan spans
        it) the validation rows."""
        splits = ("train", "validation") if self.plan.spans_validation else ("train",)
        X = [self.inputs(s, seq_len) for s in splits]
        y = [self.y[s] for s in splits]
        return (X[0], y[0]) if len(splits) == 1 else (np.concatenate(X), np.concatenate(y))

    def inputs(self, split: str, seq_len: int | None = None) -> np.ndarray:
        """The model input of a split: the matrix, or for sequential families its time windows."""
        if seq_len is None:
            return self.X[split]
        if self.order is None:
            raise DataError(
                "dataset_config.timestamp_column", "LSTM needs a timestamp_column to order its sequences"
            )
        if seq_len not in self._windows:
            self._windows[seq_len] = _windows(self, seq_len)
        return self._windows[seq_len][split]

    # -- persistence (one npz + one json; no pickles) -------------------------------------------
    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"X_{s}": self.X[s] for s in SPLITS} | {f"y_{s}": self.y[s] for s in SPLITS}
        if self.order is not None:
            arrays |= {f"order_{s}": self.order[s] for s in SPLITS}
            arrays |= {f"entity_{s}": self.entity[s] for s in SPLITS}
        np.savez(directory / "arrays.npz", **arrays)
        meta = {
            "preprocessor": self.preprocessor.to_dict(),
            "task": self.task.value,
            "classes": self.classes,
            "metric": self.metric,
            "kept": self.kept,
            "plan": self.plan.to_dict(),
            "selection": self.selection.to_dict() if self.selection else None,
        }
        (directory / "prepared.json").write_text(json.dumps(meta, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path) -> Prepared:
        meta = json.loads((directory / "prepared.json").read_text())
        with np.load(directory / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        sequential = "order_train" in arrays
        selection = None
        if meta["selection"]:
            selection = SelectionReport(kept=meta["selection"]["kept"], dropped=meta["selection"]["dropped"])
        return cls(
            preprocessor=Preprocessor.from_dict(meta["preprocessor"]),
            task=Task(meta["task"]),
            classes=meta["classes"],
            metric=meta["metric"],
            kept=list(meta["kept"]),
            plan=CVPlan.from_dict(meta["plan"]),
            X={s: arrays[f"X_{s}"] for s in SPLITS},
            y={s: arrays[f"y_{s}"] for s in SPLITS},
            order={s: arrays[f"order_{s}"] for s in SPLITS} if sequential else None,
            entity={s: arrays[f"entity_{s}"] for s in SPLITS} if sequential else None,
            selection=selection,
        )


def feature_columns(splits: Splits, cfg: DatasetConfig) -> list[str] | None:
    if cfg.features is not None:
        return list(cfg.features)
    if cfg.entity_column:
        # An entity id identifies rows, it does not describe them: as a feature it only memorises.
        return [c for c in splits.train.columns if c not in (cfg.target, cfg.entity_column)]
    return None


def prepare(splits: Splits, cfg: DatasetConfig, vcfg: ValidationConfig, *, seed: int = 0) -> Prepared:
    prep = Preprocessor(
        cfg.target, splits.task, cfg.timestamp_column, feature_columns(splits, cfg), classes=splits.classes
    ).fit(splits.train)
    frames = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    X = {s: prep.transform(f) for s, f in frames.items()}
    y = {s: prep.encode_target(f) for s, f in frames.items()}
    plan = plan_cv(
        splits.train,
        validation=splits.validation,
        target=cfg.target,
        task=splits.task,
        strategy=vcfg.cv_strategy,
        folds=vcfg.cv_folds,
        timestamp_column=cfg.timestamp_column,
        entity_column=cfg.entity_column,
        gap=cfg.gap,
        seed=seed,
    )
    prepared = Prepared(
        preprocessor=prep,
        task=splits.task,
        classes=prep.classes_,
        metric=resolve_metric(splits.task, vcfg.metric),
        kept=list(range(X["train"].shape[1])),
        plan=plan,
        X=X,
        y=y,
    )
    if cfg.timestamp_column:
        prepared.order = {s: _order(f, cfg.timestamp_column) for s, f in frames.items()}
        prepared.entity = {s: _entity(f, cfg.entity_column) for s, f in frames.items()}
    if cfg.feature_selection:
        _select(prepared, seed)
    return prepared


def _select(prepared: Prepared, seed: int) -> None:
    prep = prepared.preprocessor
    report = select_features(
        prepared.X["train"],
        prepared.y["train"],
        prep.feature_names_,
        task=prepared.task,
        plan=prepared.plan,
        seed=seed,
        categorical=prep.categorical_indices_,
    )
    prepared.selection = report
    prepared.kept = [prep.feature_names_.index(name) for name in report.kept]
    prepared.X = {s: x[:, prepared.kept] for s, x in prepared.X.items()}


def _order(frame: pl.DataFrame, column: str) -> np.ndarray:
    return (
        frame.get_column(column)
        .cast(pl.Datetime("us"))
        .dt.epoch("us")
        .fill_null(0)
        .to_numpy()
        .astype(np.int64)
    )


def _entity(frame: pl.DataFrame, column: str | None) -> np.ndarray:
    if column is None:
        return np.zeros(frame.height, dtype=np.int64)
    # A stable hash keeps codes consistent across the three splits without a shared vocabulary.
    return frame.get_column(column).cast(pl.String).hash(seed=0).to_numpy().astype(np.int64)


def _windows(prepared: Prepared, seq_len: int) -> dict[str, np.ndarray]:
    """Windows over all periods at once, so validation rows see their entity's training history.
    Windows only look backwards, so no row ever sees a later one (or any target)."""
    X = np.concatenate([prepared.X[s] for s in SPLITS])
    entity = np.concatenate([prepared.entity[s] for s in SPLITS])
    order = np.concatenate([prepared.order[s] for s in SPLITS])
    windows = build_sequences(X, entity, order, seq_len)
    bounds = np.cumsum([0] + [len(prepared.X[s]) for s in SPLITS])
    return {s: windows[bounds[i] : bounds[i + 1]] for i, s in enumerate(SPLITS)}

"""A job's ML, end to end and pure: prepare once, cross-validate any family, fit the final model.

``prepare`` fits the preprocessor on the training period only, plans the CV folds (one split
specification per job) and runs feature selection on those folds; every later stage, every trial and
the final fit reuse the result. Balancing and augmentation touch only the rows a model is fitted on.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from pmls.contracts import DatasetConfig, ModelType, Task, TrainingMetrics, ValidationConfig
from pmls.ml.cv import CVPlan, plan_cv
from pmls.ml.data import Splits
from pmls.ml.errors import DataError
from pmls.ml.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC, compute_metrics
from pmls.ml.preprocess import Preprocessor
from pmls.ml.selection import SelectionReport, select_features
from pmls.ml.sequences import build_sequences

SPLITS = ("train", "validation", "test")
TOP_IMPORTANCES = 50
Callback = Callable[[int, int, float | None], None]
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


# -- fitting -----------------------------------------------------------------------------------
@dataclass
class FitOptions:
    model_type: ModelType
    params: dict
    seed: int = 0
    num_threads: int = 1
    class_balancing: bool = False
    balancing_method: str = "class_weight"
    data_augmentation: bool = False
    augmentation_method: str = "auto"
    sequence_length: int = 10

    @classmethod
    def from_config(
        cls,
        cfg: DatasetConfig,
        model_type: ModelType,
        params: dict | None,
        *,
        seed: int,
        num_threads: int = 1,
    ) -> FitOptions:
        return cls(
            model_type=model_type,
            params=dict(params or {}),
            seed=seed,
            num_threads=num_threads,
            class_balancing=cfg.class_balancing,
            balancing_method=cfg.balancing_method,
            data_augmentation=cfg.data_augmentation,
            augmentation_method=cfg.augmentation_method,
            sequence_length=cfg.sequence_length,
        )


def fit_model(
    prepared: Prepared,
    opts: FitOptions,
    X: np.ndarray,
    y: np.ndarray,
    X_valid: np.ndarray | None,
    y_valid: np.ndarray | None,
    callbacks: Sequence[Callback] = (),
):
    """Fit one model on the rows given; balancing and augmentation touch only these rows."""
    from pmls.ml.zoo import get_entry

    entry = get_entry(opts.model_type)
    X, y, weight = _rebalance_and_augment(prepared, opts, X, y, sequential=entry.sequential)
    if opts.class_balancing and X_valid is not None and prepared.task is not Task.REGRESSION:
        X_valid, y_valid = _balanced_validation(X_valid, y_valid, opts.seed)
    model = entry.cls(prepared.task, prepared.num_classes, opts.params, opts.seed, opts.num_threads)
    return model.fit(
        X,
        y,
        X_valid=X_valid,
        y_valid=y_valid,
        sample_weight=weight,
        categorical=prepared.categorical,
        callbacks=callbacks,
    )


def _rebalance_and_augment(prepared: Prepared, opts: FitOptions, X, y, *, sequential: bool):
    from pmls.ml.augment import augment_sequences, augment_tabular
    from pmls.ml.balancing import oversample, sample_weights

    classify = prepared.task is not Task.REGRESSION
    if opts.class_balancing and classify and opts.balancing_method == "oversample" and not sequential:
        X, y = oversample(X, y, seed=opts.seed)
    weight = None
    if opts.data_augmentation:
        if sequential:
            X, y = augment_sequences(X, y, seed=opts.seed)
        else:
            X, y, weight = augment_tabular(
                X,
                y,
                task=prepared.task,
                method=opts.augmentation_method,
                seed=opts.seed,
                categorical=list(prepared.categorical),
            )
    if opts.class_balancing and classify and (opts.balancing_method == "class_weight" or sequential):
        weight = sample_weights(y, prepared.num_classes)
    return X, y, weight


def _balanced_validation(X_valid: np.ndarray, y_valid: np.ndarray, seed: int):
    """Early stopping on an unweighted validation loss drifts back to the class prior and undoes the
    balancing: judge the rounds on class-balanced validation rows (resampled, never trained on)."""
    from pmls.ml.balancing import oversample_indices

    if len(np.unique(y_valid)) < 2:
        return X_valid, y_valid
    index = oversample_indices(y_valid, seed=seed)
    return X_valid[index], y_valid[index]


def predict_scores(model, task: Task, X: np.ndarray) -> np.ndarray:
    """Probabilities (n x k) for classification, values for regression."""
    return model.predict(X) if task is Task.REGRESSION else model.predict_proba(X)


def score(prepared: Prepared, y: np.ndarray, predicted: np.ndarray) -> float:
    value = compute_metrics(prepared.task, y, predicted).get(prepared.metric)
    if value is None or not math.isfinite(value):
        raise DataError("validation_config.metric", f"{prepared.metric} is undefined on this validation data")
    return value


@dataclass
class CVResult:
    metric: str
    scores: list[float]
    best_iterations: list[int]
    oof: np.ndarray | None = None  # out-of-fold scores over the training period; NaN where no fold covers

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores))


def cross_validate(
    prepared: Prepared,
    opts: FitOptions,
    *,
    callbacks: Sequence[Callback] = (),
    on_fold: Callable[[int, float], None] | None = None,
) -> CVResult:
    """Score ``opts`` on the job's folds (or on the validation period when CV is off)."""
    seq = _seq_len(opts)
    X_all, y_all = prepared.inputs("train", seq), prepared.y["train"]
    folds = [(f.train, f.valid) for f in prepared.plan.folds]
    scores, iterations = [], []
    if not folds:
        folds_data = [(X_all, y_all, prepared.inputs("validation", seq), prepared.y["validation"])]
    else:
        folds_data = ((X_all[tr], y_all[tr], X_all[va], y_all[va]) for tr, va in folds)
    oof = _empty_oof(prepared) if folds else None
    for index, (X, y, X_va, y_va) in enumerate(folds_data):
        model = fit_model(prepared, opts, X, y, X_va, y_va, callbacks)
        predicted = predict_scores(model, prepared.task, X_va)
        if oof is not None:
            oof[folds[index][1]] = predicted
        scores.append(score(prepared, y_va, predicted))
        iterations.append(int(model.best_iteration_ or 0))
        if on_fold is not None:
            on_fold(index, scores[-1])
    return CVResult(prepared.metric, scores, iterations, oof)


def _empty_oof(prepared: Prepared) -> np.ndarray:
    n = len(prepared.y["train"])
    shape = (n,) if prepared.task is Task.REGRESSION else (n, prepared.num_classes)
    return np.full(shape, np.nan)


def _seq_len(opts: FitOptions) -> int | None:
    from pmls.ml.zoo import get_entry

    return opts.sequence_length if get_entry(opts.model_type).sequential else None


@dataclass
class FinalModel:
    model: object
    metrics: TrainingMetrics
    seq_len: int | None
    # The periods the delivered model was fitted on, and those of the model the test metrics come from
    # (the latter never include the test period).
    fitted_on: tuple[str, ...] = ("train", "validation")
    evaluated_with: tuple[str, ...] = ("train", "validation")
    test_scores: np.ndarray | None = None  # the test predictions the test metrics come from


ITERATION_KEYS = {
    ModelType.LIGHTGBM: "num_boost_round",
    ModelType.XGBOOST: "num_boost_round",
    ModelType.NEURAL_NETWORK: "max_epochs",
    ModelType.LSTM: "max_epochs",
}
MAX_ROUND_SCALE = 1.5  # more rows want more rounds, but a small first fold must not multiply them


def fit_final(
    prepared: Prepared,
    opts: FitOptions,
    *,
    cv_scores: Sequence[float] = (),
    cv_iterations: Sequence[int] = (),
    callbacks: Sequence[Callback] = (),
    refit: bool = True,
    refit_all: bool = True,
) -> FinalModel:
    """Fit on the training period with early stopping on validation (the validation metrics come from this
    model); refit on training + validation and score the test period once with that model, which never saw
    it; then (``refit_all``) refit on every row, test period included: the model delivered.

    Refits run without early stopping, for the rounds the CV folds found on average (``cv_iterations``;
    else the first fit's), scaled to the rows fitted.
    """
    seq = _seq_len(opts)
    X = {s: prepared.inputs(s, seq) for s in SPLITS}
    y = prepared.y
    model = fit_model(prepared, opts, X["train"], y["train"], X["validation"], y["validation"], callbacks)
    scores = {
        s: compute_metrics(prepared.task, y[s], predict_scores(model, prepared.task, X[s])) for s in SPLITS
    }
    if not refit:
        return FinalModel(
            model, _training_metrics(prepared, scores, model, list(cv_scores)), seq, ("train",), ("train",)
        )
    rounds = Rounds.of(prepared, model, cv_iterations)
    model = _refit(prepared, opts, rounds, X, ("train", "validation"), callbacks)
    predicted = {s: predict_scores(model, prepared.task, X[s]) for s in ("train", "test")}
    for split, values in predicted.items():
        scores[split] = compute_metrics(prepared.task, y[split], values)
    metrics = _training_metrics(prepared, scores, model, list(cv_scores))
    if not refit_all:
        return FinalModel(model, metrics, seq, test_scores=predicted["test"])
    delivered = _refit(prepared, opts, rounds, X, SPLITS, callbacks)
    metrics.feature_importance = _importance(prepared.names, getattr(delivered, "feature_importances_", None))
    return FinalModel(delivered, metrics, seq, SPLITS, test_scores=predicted["test"])


@dataclass(frozen=True)
class Rounds:
    """Iterations for a fit without early stopping: ``count`` found on ``rows`` rows (0: the family has none)."""

    count: int
    rows: float

    @classmethod
    def of(cls, prepared: Prepared, first, cv_iterations: Sequence[int] = ()) -> Rounds:
        """The mean over the CV folds when they found any (less noisy than one validation period), else the
        first fit's early-stopping point."""
        found = [int(i) for i in cv_iterations if i]
        if found and len(found) == len(prepared.plan.folds):
            rows = float(np.mean([len(f.train) for f in prepared.plan.folds]))
            return cls(max(1, round(float(np.mean(found)))), rows)
        return cls(int(first.best_iteration_ or 0), float(len(prepared.y["train"])))

    def params(self, opts: FitOptions, rows: int) -> dict:
        params = dict(opts.params)
        key = ITERATION_KEYS.get(opts.model_type)
        if key is None or not self.count:
            return params
        # Boosting rounds grow with the data; epochs do not (an epoch over more rows already takes more
        # steps, and scaled epochs made the networks overconfident).
        scale = min(rows / self.rows, MAX_ROUND_SCALE) if key == "num_boost_round" else 1.0
        params[key] = max(1, round(self.count * max(scale, 1.0)))
        params["early_stopping_rounds"] = params[key] + 1
        return params


def _refit(
    prepared: Prepared,
    opts: FitOptions,
    rounds: Rounds,
    X: dict,
    splits: Sequence[str],
    callbacks: Sequence[Callback],
):
    """One fit on the rows of ``splits``, no early stopping, for ``rounds`` scaled to those rows."""
    X_all = np.concatenate([X[s] for s in splits])
    y_all = np.concatenate([prepared.y[s] for s in splits])
    params = rounds.params(opts, len(y_all))
    model = fit_model(prepared, replace(opts, params=params), X_all, y_all, None, None, callbacks)
    key = ITERATION_KEYS.get(opts.model_type)
    if key and key in params:
        model.best_iteration_ = params[key]
    return model


def _bag(
    prepared: Prepared,
    opts: FitOptions,
    X: dict,
    k: int,
    callbacks: Sequence[Callback],
    splits: Sequence[str] = ("train", "validation"),
):
    """k models on the rows of ``splits``, each early-stopped on the fold it leaves out (stratified when
    classifying).

    Shuffled folds, also for time-ordered data: every model still learns from the latest rows.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    from pmls.ml.ensemble import Bag

    X_all = np.concatenate([X[s] for s in splits])
    y_all = np.concatenate([prepared.y[s] for s in splits])
    classify = prepared.task is not Task.REGRESSION
    if (
        classify
    ):  # no more folds than the rarest class has rows (sklearn would warn and leave folds without it)
        counts = np.bincount(y_all.astype(np.int64))
        k = max(2, min(k, int(counts[counts > 0].min())))
    splitter = (StratifiedKFold if classify else KFold)(n_splits=k, shuffle=True, random_state=opts.seed)
    models = []
    for j, (fit_rows, stop_rows) in enumerate(splitter.split(X_all.reshape(len(y_all), -1), y_all)):
        bag_opts = replace(opts, seed=opts.seed + 1000 * (j + 1))
        models.append(
            fit_model(
                prepared,
                bag_opts,
                X_all[fit_rows],
                y_all[fit_rows],
                X_all[stop_rows],
                y_all[stop_rows],
                callbacks,
            )
        )
    return Bag(models, prepared.task)


def _training_metrics(prepared: Prepared, scores: dict, model, cv_scores: list[float]) -> TrainingMetrics:
    accuracy = "r2" if prepared.task is Task.REGRESSION else "accuracy"
    loss = "rmse" if prepared.task is Task.REGRESSION else "log_loss"
    return TrainingMetrics(
        training_accuracy=scores["train"].get(accuracy),
        validation_accuracy=scores["validation"].get(accuracy),
        training_loss=scores["train"].get(loss),
        validation_loss=scores["validation"].get(loss),
        feature_importance=_importance(prepared.names, getattr(model, "feature_importances_", None)),
        cross_validation_scores=[float(s) for s in cv_scores],
        validation_metrics=scores["validation"],
        test_metrics=scores["test"],
    )


def _importance(names: list[str], values) -> dict[str, float]:
    if values is None:
        return {}
    values = np.asarray(values, dtype=np.float64)
    total = float(values.sum())
    if total <= 0:
        return {}
    ranked = sorted(zip(names, values, strict=True), key=lambda item: -item[1])[:TOP_IMPORTANCES]
    return {name: float(v) / total for name, v in ranked}


# -- ensembles ---------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One fully evaluated configuration: its options and its out-of-fold scores on the job's folds."""

    opts: FitOptions
    oof: np.ndarray | None
    cv_mean: float
    iterations: Sequence[int] = ()  # best iteration per CV fold


@dataclass
class EnsembleOutcome:
    final: FinalModel
    choice: object
    candidates: list[dict]


def build_ensemble(
    prepared: Prepared,
    candidates: list[Candidate],
    *,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    bag_folds: int = 0,
    refit_all: bool = True,
) -> EnsembleOutcome:
    """Fit each candidate on the training period and choose single / Caruana / blend / stacking on every
    held-out prediction (out of fold and validation); refit the chosen members on training + validation (the
    test metrics come from this ensemble), then on every row (``refit_all``): the ensemble delivered. Each
    delivered member is one refit, or (``bag_folds`` >= 2) a bag of k models, one per fold left out."""
    from pmls.ml.ensemble import EnsembleModel, choose_ensemble

    seqs = [_seq_len(c.opts) for c in candidates]
    firsts, valid_scores, costs = [], [], []
    for cand, seq in zip(candidates, seqs, strict=True):
        started = time.perf_counter()
        model = fit_model(
            prepared,
            cand.opts,
            prepared.inputs("train", seq),
            prepared.y["train"],
            prepared.inputs("validation", seq),
            prepared.y["validation"],
            callbacks,
        )
        firsts.append(model)
        valid_scores.append(predict_scores(model, prepared.task, prepared.inputs("validation", seq)))
        costs.append(time.perf_counter() - started)  # fit + predict: what a tie between families is broken by
    oof = [c.oof if c.oof is not None else _empty_oof(prepared) for c in candidates]
    choice = choose_ensemble(
        oof,
        prepared.y["train"],
        valid_scores,
        prepared.y["validation"],
        prepared.task,
        prepared.metric,
        seed=seed,
        cv_scores=[c.cv_mean for c in candidates],
        costs=costs,
    )

    def members(splits: tuple[str, ...], bag: bool) -> EnsembleModel:
        fitted = []
        for index in choice.members:
            X = {s: prepared.inputs(s, seqs[index]) for s in SPLITS}
            opts = candidates[index].opts
            if bag:
                fitted.append(_bag(prepared, opts, X, bag_folds, callbacks, splits))
            else:
                rounds = Rounds.of(prepared, firsts[index], candidates[index].iterations)
                fitted.append(_refit(prepared, opts, rounds, X, splits, callbacks))
        sequential = [seqs[i] is not None for i in choice.members]
        return EnsembleModel(fitted, choice, prepared.task, prepared.num_classes, sequential=sequential)

    bag = bag_folds >= 2
    evaluated = members(("train", "validation"), bag and not refit_all)
    seq = max((s for s in seqs if s is not None), default=None)
    # The ensemble's validation figures are those of predictions it did not learn from (cross-fitted).
    scores = {
        "validation": compute_metrics(prepared.task, prepared.y["validation"], choice.validation_predictions)
    }  # type: ignore[attr-defined]
    predicted = {
        s: predict_scores(evaluated, prepared.task, _ensemble_input(prepared, s, seq))
        for s in ("train", "test")
    }
    for split, values in predicted.items():
        scores[split] = compute_metrics(prepared.task, prepared.y[split], values)
    metrics = _training_metrics(prepared, scores, evaluated, [])
    if refit_all:
        delivered = members(SPLITS, bag)
        metrics.feature_importance = _importance(prepared.names, delivered.feature_importances_)
        final = FinalModel(delivered, metrics, seq, SPLITS, test_scores=predicted["test"])
    else:
        final = FinalModel(evaluated, metrics, seq, test_scores=predicted["test"])
    described = [
        {
            "model_type": c.opts.model_type.value,
            "params": c.opts.params,
            "cv_mean": c.cv_mean,
            "validation": float(_metric_or_nan(prepared, valid_scores[i])),
            "chosen": i in choice.members,
            "fit_predict_seconds": round(costs[i], 3),
        }
        for i, c in enumerate(candidates)
    ]
    return EnsembleOutcome(final, choice, described)


def _ensemble_input(prepared: Prepared, split: str, seq: int | None):
    if seq is None:
        return prepared.inputs(split)
    return {"tabular": prepared.inputs(split), "sequence": prepared.inputs(split, seq)}


def _metric_or_nan(prepared: Prepared, predicted: np.ndarray) -> float:
    value = compute_metrics(prepared.task, prepared.y["validation"], predicted).get(prepared.metric)
    return float("nan") if value is None else value

"""Fitting one configuration: its options, one model on given rows (balancing and augmentation touch only the
rows it is fitted on), its scores, and its cross-validation over the job's plan (with out-of-fold predictions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pmls.contracts import DatasetConfig, ModelType, Task
from pmls.ml.errors import DataError
from pmls.ml.metrics import compute_metrics
from pmls.ml.prepared import Prepared

Callback = Callable[[int, int, float | None], None]


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
    seq = sequence_length(opts)
    X_all, y_all = prepared.cv_rows(seq)
    folds = [(f.train, f.valid) for f in prepared.plan.folds]
    scores, iterations = [], []
    if not folds:
        folds_data = [(X_all, y_all, prepared.inputs("validation", seq), prepared.y["validation"])]
    else:
        folds_data = ((X_all[tr], y_all[tr], X_all[va], y_all[va]) for tr, va in folds)
    oof = empty_oof(prepared) if folds else None
    fitted = []
    for index, (X, y, X_va, y_va) in enumerate(folds_data):
        model = fit_model(prepared, opts, X, y, X_va, y_va, callbacks)
        predicted = predict_scores(model, prepared.task, X_va)
        if oof is not None:
            oof[folds[index][1]] = predicted
        scores.append(score(prepared, y_va, predicted))
        iterations.append(int(model.best_iteration_ or 0))
        fitted.append((model, X_va, y_va))
        if on_fold is not None:
            on_fold(index, scores[-1])  # provisional (each fold at its own best round): what pruning compares
    rounds = shared_round([model for model, _, _ in fitted]) if oof is not None else None
    if rounds is not None:
        # Judge every fold at the one round that is best on average, as lgb.cv does: a fold's own best round
        # flatters it, most of all for fast learners, and the refit takes one number of rounds anyway.
        scores, iterations = [], [rounds] * len(fitted)
        for index, (model, X_va, y_va) in enumerate(fitted):
            predicted = model.scores_at(X_va, rounds)
            oof[folds[index][1]] = predicted
            scores.append(score(prepared, y_va, predicted))
    return CVResult(prepared.metric, scores, iterations, oof)


def shared_round(models: Sequence) -> int | None:
    """The round whose validation loss, averaged over the folds, is best (1-based); None unless every model
    recorded its curve. A fold that stopped early keeps its last value for the rounds it did not train."""
    curves = [getattr(m, "valid_curve_", None) for m in models]
    if not curves or any(c is None or len(c) == 0 for c in curves):
        return None
    length = max(len(c) for c in curves)
    mean = np.mean([np.concatenate([c, np.full(length - len(c), c[-1])]) for c in curves], axis=0)
    best = np.argmax(mean) if models[0].curve_higher_is_better_ else np.argmin(mean)
    return int(best) + 1


def empty_oof(prepared: Prepared) -> np.ndarray:
    n = len(prepared.y["train"]) + (len(prepared.y["validation"]) if prepared.plan.spans_validation else 0)
    shape = (n,) if prepared.task is Task.REGRESSION else (n, prepared.num_classes)
    return np.full(shape, np.nan)


def sequence_length(opts: FitOptions) -> int | None:
    from pmls.ml.zoo import get_entry

    return opts.sequence_length if get_entry(opts.model_type).sequential else None

"""The model delivered: the chosen configuration (``fit_final``) or an ensemble of the candidates
(``build_ensemble``), evaluated on the periods it never saw and then refit on every row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pmls.contracts import ModelType, Task, TrainingMetrics
from pmls.ml.fitting import Callback, FitOptions, empty_oof, fit_model, predict_scores, sequence_length
from pmls.ml.metrics import compute_metrics
from pmls.ml.prepared import SPLITS, Prepared

TOP_IMPORTANCES = 50


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
    seq = sequence_length(opts)
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

    from pmls.ml.ensemble_model import Bag

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
    from pmls.ml.ensemble import choose_ensemble
    from pmls.ml.ensemble_model import EnsembleModel

    seqs = [sequence_length(c.opts) for c in candidates]
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
    # The ensemble is judged on out-of-fold predictions of the training rows and, separately, on the validation
    # period (a plan that spans it has predicted it out of fold already, with the same training rows).
    n_train = len(prepared.y["train"])
    oof = [(c.oof if c.oof is not None else empty_oof(prepared))[:n_train] for c in candidates]
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

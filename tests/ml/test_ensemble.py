"""Ensembles on real (bundled) data: three tasks, four different zoo members each, 5-fold OOF."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.model_selection import KFold, train_test_split

from pmls.contracts import ModelType, Task
from pmls.ml.ensemble import (
    METHODS,
    MIN_WEIGHT,
    EnsembleChoice,
    _search_value,
    best_single,
    blend_weights,
    caruana,
    choose_ensemble,
    combine,
    coverage,
    fit_stacker,
    metric_value,
)
from pmls.ml.ensemble_model import Bag, EnsembleModel
from pmls.ml.errors import DataError
from pmls.ml.fitting import predict_scores
from pmls.ml.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC
from pmls.ml.zoo import get_entry

# Four members that differ in kind, not just in seed, and train in well under a second each.
MEMBERS = [
    (ModelType.LIGHTGBM, {"num_boost_round": 80, "num_leaves": 4, "learning_rate": 0.1}),
    (
        ModelType.LIGHTGBM,
        {"num_boost_round": 60, "num_leaves": 31, "learning_rate": 0.05, "extra_trees": True},
    ),
    (ModelType.RANDOM_FOREST, {"n_estimators": 40, "min_samples_leaf": 3}),
    (ModelType.NEURAL_NETWORK, {"max_epochs": 20, "hidden_size": 32, "num_layers": 1}),
]
LOADERS = {
    "breast_cancer": (load_breast_cancer, Task.BINARY),
    "wine": (load_wine, Task.MULTICLASS),
    "diabetes": (load_diabetes, Task.REGRESSION),
}
DATASETS = list(LOADERS)


@dataclass
class Case:
    task: Task
    k: int | None
    X: np.ndarray
    y: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    oof: list[np.ndarray]  # members' out-of-fold scores on the training rows
    valid: list[np.ndarray]  # members fitted on all training rows, scored on validation
    models: list  # those fitted members

    @property
    def metric(self) -> str:
        return PRIMARY_METRIC[self.task]


def _build(task: Task, k: int | None, params: dict, seed: int = 0):
    return get_entry(params["family"]).cls(task, k, params["params"], seed, 1)


@cache
def case(name: str) -> Case:
    loader, task = LOADERS[name]
    X, y = loader(return_X_y=True)
    X = X.astype(np.float32)
    k = None if task is Task.REGRESSION else int(y.max()) + 1
    X, X_valid, y, y_valid = train_test_split(
        X, y, test_size=0.3, random_state=0, stratify=None if k is None else y
    )
    oof, valid, models = [], [], []
    for family, params in MEMBERS:
        spec = {"family": family, "params": params}
        scores = np.full((len(y),) if k is None else (len(y), k), np.nan)
        for train, test in KFold(5, shuffle=True, random_state=0).split(X):
            scores[test] = predict_scores(_build(task, k, spec).fit(X[train], y[train]), task, X[test])
        model = _build(task, k, spec).fit(X, y)
        oof.append(scores)
        valid.append(predict_scores(model, task, X_valid))
        models.append(model)
    return Case(task, k, X, y, X_valid, y_valid, oof, valid, models)


@cache
def chosen(name: str) -> EnsembleChoice:
    c = case(name)
    return choose_ensemble(c.oof, c.y, c.valid, c.y_valid, c.task, c.metric, seed=0)


def _better_or_equal(metric: str, a: float, b: float, tol: float = 1e-12) -> bool:
    return a >= b - tol if metric in HIGHER_IS_BETTER else a <= b + tol


def _best_single(c: Case, scores: list[np.ndarray], y: np.ndarray, metric: str) -> float:
    values = [metric_value(c.task, y, s, metric) for s in scores]
    return max(values) if metric in HIGHER_IS_BETTER else min(values)


# --- weight builders ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_weights_are_on_the_simplex(name):
    c = case(name)
    for weights in (caruana(c.oof, c.y, c.task, c.metric), blend_weights(c.oof, c.y, c.task)):
        assert weights.shape == (len(MEMBERS),)
        assert (weights >= 0).all() and math.isclose(weights.sum(), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize(
    "name,metric",
    [
        ("breast_cancer", "roc_auc"),
        ("breast_cancer", "log_loss"),
        ("wine", "log_loss"),
        ("wine", "accuracy"),
        ("diabetes", "rmse"),
        ("diabetes", "r2"),
    ],
)
def test_caruana_never_loses_to_its_best_single_member_on_oof(name, metric):
    c = case(name)
    weights = caruana(c.oof, c.y, c.task, metric)
    blended = metric_value(c.task, c.y, combine(c.oof, _weighted("caruana", weights), c.task), metric)
    assert _better_or_equal(metric, blended, _best_single(c, c.oof, c.y, metric))


def test_caruana_with_several_initial_members_still_beats_the_best_single():
    c = case("breast_cancer")
    weights = caruana(c.oof, c.y, c.task, "log_loss", init=3, rounds=10)
    blended = metric_value(c.task, c.y, combine(c.oof, _weighted("caruana", weights), c.task), "log_loss")
    assert blended <= _best_single(c, c.oof, c.y, "log_loss")


@pytest.mark.parametrize("name", DATASETS)
def test_jax_blend_beats_the_uniform_average_on_oof(name):
    c = case(name)
    metric = "rmse" if c.task is Task.REGRESSION else "log_loss"
    uniform = np.full(len(MEMBERS), 1.0 / len(MEMBERS))
    weights = blend_weights(c.oof, c.y, c.task)
    blended = metric_value(c.task, c.y, combine(c.oof, _weighted("blend", weights), c.task), metric)
    assert blended < metric_value(c.task, c.y, combine(c.oof, _weighted("blend", uniform), c.task), metric)


def test_search_metrics_match_compute_metrics():
    c = case("breast_cancer")
    for metric in ("log_loss", "accuracy", "brier", "roc_auc", "f1"):
        assert math.isclose(
            _search_value(c.task, c.y, c.oof[0], metric),
            metric_value(c.task, c.y, c.oof[0], metric),
            rel_tol=1e-9,
        )
    w = case("wine")
    assert math.isclose(
        _search_value(w.task, w.y, w.oof[2], "log_loss"),
        metric_value(w.task, w.y, w.oof[2], "log_loss"),
        rel_tol=1e-9,
    )


# --- stacking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_stacker_trains_only_on_covered_rows(name):
    c = case(name)
    oof = [o.copy() for o in c.oof]
    y = c.y.copy()
    for o in oof:
        o[:40] = np.nan  # the earliest block of a time-series CV: no member predicts it
    oof[1][60:70] = np.nan  # one member missing a few rows: those rows are not covered either
    y[:40] = y[60:70].max() if c.k is None else 0  # labels on uncovered rows must not matter
    mask = coverage(oof)
    assert mask.sum() == len(y) - 50
    stacker = fit_stacker(oof, y, c.task, seed=0)
    reference = fit_stacker([o[mask] for o in c.oof], c.y[mask], c.task, seed=0)
    np.testing.assert_allclose(stacker.coef, reference.coef)
    np.testing.assert_allclose(stacker.intercept, reference.intercept)
    scores = stacker.predict_scores(c.valid)
    assert np.isfinite(scores).all()
    if c.k is not None:
        assert scores.shape == (len(c.y_valid), c.k)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0)


def test_stacker_round_trips_through_json_and_handles_a_missing_class():
    c = case("wine")
    oof = [o.copy() for o in c.oof]
    for o in oof:
        o[c.y == 2] = np.nan  # class 2 never appears among covered rows
    stacker = fit_stacker(oof, c.y, c.task, seed=0)
    assert stacker.classes == [0, 1]
    again = type(stacker).from_dict(json.loads(json.dumps(stacker.to_dict())))
    scores = again.predict_scores(c.valid)
    np.testing.assert_array_equal(scores, stacker.predict_scores(c.valid))
    assert scores.shape == (len(c.y_valid), 3) and np.allclose(scores.sum(axis=1), 1.0)


def test_weight_builders_ignore_uncovered_rows():
    c = case("breast_cancer")
    oof = [o.copy() for o in c.oof]
    for o in oof:
        o[:50] = np.nan
    mask = coverage(oof)
    np.testing.assert_array_equal(
        caruana(oof, c.y, c.task, "log_loss"),
        caruana([o[mask] for o in c.oof], c.y[mask], c.task, "log_loss"),
    )
    np.testing.assert_allclose(
        blend_weights(oof, c.y, c.task), blend_weights([o[mask] for o in c.oof], c.y[mask], c.task)
    )


# --- choosing and combining ---------------------------------------------------------------------


def _pooled(
    c: Case, scores: list[np.ndarray], valid: list[np.ndarray]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Every held-out prediction of each member (OOF, then validation) and the targets, as choose_ensemble
    pools them."""
    return [np.concatenate([o, v]) for o, v in zip(scores, valid, strict=True)], np.concatenate(
        [c.y, c.y_valid]
    )


@pytest.mark.parametrize("name", DATASETS)
def test_choice_is_at_least_as_good_as_the_best_single_on_every_held_out_row(name):
    c, choice = case(name), chosen(name)
    pooled, y = _pooled(c, c.oof, c.valid)
    assert set(choice.scores) == set(choice.validation_scores) == set(METHODS)
    assert choice.heldout_rows == len(y)
    assert choice.scores["single"] == _best_single(c, pooled, y, c.metric)
    assert _better_or_equal(c.metric, choice.heldout_score, choice.scores["single"])
    best = max(choice.scores.values()) if c.metric in HIGHER_IS_BETTER else min(choice.scores.values())
    assert choice.heldout_score == best == choice.scores[choice.method]
    assert choice.validation_score == choice.validation_scores[choice.method]
    if choice.weights is not None:
        assert len(choice.weights) == len(choice.members) and all(w > 0 for w in choice.weights)
        assert math.isclose(sum(choice.weights), 1.0) and min(choice.weights) >= MIN_WEIGHT


def test_methods_are_judged_on_rows_they_did_not_learn_from():
    # Twelve members of pure noise beside one real member: a stacker fitted on the rows it is scored on
    # would look better than it is; judged on rows it did not learn from, the real member alone wins.
    c = case("breast_cancer")
    rng = np.random.default_rng(0)
    noise = [rng.dirichlet([1.0, 1.0], size=len(c.y) + len(c.y_valid)) for _ in range(12)]
    oof = [c.oof[0]] + [n[: len(c.y)] for n in noise]
    valid = [c.valid[0]] + [n[len(c.y) :] for n in noise]
    choice = choose_ensemble(oof, c.y, valid, c.y_valid, c.task, "log_loss", seed=0)
    pooled, y = _pooled(c, oof, valid)
    in_sample = metric_value(c.task, y, fit_stacker(pooled, y, c.task).predict_scores(pooled), "log_loss")
    assert choice.scores["stack"] > in_sample  # held out, the stacker's fit to the noise costs it
    assert _better_or_equal("log_loss", choice.heldout_score, choice.scores["single"])
    assert 0 in choice.members


def test_ties_go_to_the_simpler_method():
    c = case("breast_cancer")
    same = [c.oof[0]] * 3  # identical members: every method ties with the single model at best
    choice = choose_ensemble(same, c.y, [c.valid[0]] * 3, c.y_valid, c.task, "accuracy", seed=0)
    assert choice.scores["caruana"] == choice.scores["blend"] == choice.scores["single"]
    best = max(choice.scores.values())
    assert choice.method == next(m for m in METHODS if choice.scores[m] == best)
    if choice.method == "single":
        assert choice.members == [0]


def test_near_ties_between_single_models_go_to_the_faster_one():
    # ROC AUC (higher is better): 0.90005 is best, 0.9000 is within 1e-4 of it, 0.80 is not.
    assert best_single("roc_auc", [0.9000, 0.90005, 0.80], costs=[1.0, 5.0, 0.1]) == 0
    assert best_single("roc_auc", [0.9000, 0.90005, 0.80]) == 0  # no costs: the earliest of the tie
    assert best_single("roc_auc", [0.89, 0.90005, 0.80], costs=[1.0, 5.0, 0.1]) == 1  # a real gap wins
    # RMSE (lower is better), and an undefined score never wins.
    assert best_single("rmse", [10.0005, 10.0, math.nan], costs=[0.5, 3.0, 0.0]) == 0
    assert best_single("rmse", [12.0, 10.0, math.nan], costs=[0.5, 3.0, 0.0]) == 1


def test_the_best_single_is_chosen_on_the_cv_folds_when_every_candidate_has_a_score():
    c = case("wine")
    by_validation = choose_ensemble(c.oof[:1] * 2, c.y, c.valid[:2], c.y_valid, c.task, c.metric)
    worse_first = [c.valid[1], c.valid[0]]
    # CV says candidate 1 (whatever validation says): the single choice follows the folds.
    choice = choose_ensemble(
        c.oof[:1] * 2, c.y, worse_first, c.y_valid, c.task, c.metric, cv_scores=[2.0, 0.1], costs=[1.0, 1.0]
    )
    pooled, y = _pooled(c, c.oof[:1] * 2, worse_first)
    assert choice.scores["single"] == metric_value(c.task, y, pooled[1], c.metric)
    # Without CV scores the single model is the better of the two on the held-out rows (log loss: the lower).
    pooled, y = _pooled(c, c.oof[:1] * 2, c.valid[:2])
    assert by_validation.scores["single"] == min(metric_value(c.task, y, p, c.metric) for p in pooled)


def test_one_member_gives_the_single_and_no_oof_coverage_leaves_the_validation_rows():
    c = case("diabetes")
    one = choose_ensemble(c.oof[:1], c.y, c.valid[:1], c.y_valid, c.task, "rmse")
    assert (one.method, one.members, list(one.scores)) == ("single", [0], ["single"])
    uncovered = [o.copy() for o in c.oof]
    uncovered[0][::2], uncovered[1][1::2] = np.nan, np.nan
    choice = choose_ensemble(uncovered, c.y, c.valid, c.y_valid, c.task, "rmse")
    assert choice.heldout_rows == len(c.y_valid)  # no training row is covered by every member
    assert choice.scores["single"] == _best_single(c, c.valid, c.y_valid, "rmse")
    assert _better_or_equal("rmse", choice.heldout_score, choice.scores["single"])


def test_choice_is_deterministic_and_json_ready():
    c = case("wine")
    first = choose_ensemble(c.oof, c.y, c.valid, c.y_valid, c.task, c.metric, seed=0)
    assert first.to_dict() == chosen("wine").to_dict()
    assert EnsembleChoice.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    np.testing.assert_array_equal(
        blend_weights(c.oof, c.y, c.task, seed=5), blend_weights(c.oof, c.y, c.task, seed=5)
    )


def test_every_method_combines_members_consistently():
    c = case("breast_cancer")
    for method, weights in (
        ("caruana", caruana(c.oof, c.y, c.task, c.metric)),
        ("blend", blend_weights(c.oof, c.y, c.task)),
    ):
        out = combine(c.valid, _weighted(method, weights), c.task)
        np.testing.assert_allclose(out, np.tensordot(weights, np.stack(c.valid), axes=1))
    stacker = fit_stacker(c.oof, c.y, c.task, seed=0)
    stack = EnsembleChoice("stack", None, stacker.to_dict(), [0, 1, 2, 3], math.nan, {})
    np.testing.assert_array_equal(combine(c.valid, stack, c.task), stacker.predict_scores(c.valid))


# --- serving ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_ensemble_model_round_trip(name, tmp_path):
    c, choice = case(name), chosen(name)
    model = EnsembleModel([c.models[i] for i in choice.members], choice, c.task, c.k)
    expected = combine(c.valid, choice, c.task)
    _assert_serves(model, c, expected)
    model.save(tmp_path / "ens")
    loaded = EnsembleModel.load(tmp_path / "ens")
    assert loaded.choice == choice and loaded.sequential == model.sequential
    _assert_serves(loaded, c, expected)
    importances = loaded.feature_importances_
    if any(m.feature_importances_ is not None for m in loaded.members):  # the MLP reports none
        assert importances.shape == (c.X.shape[1],) and math.isclose(importances.sum(), 1.0)
    else:
        assert importances is None
    assert loaded.best_iteration_ is None


def test_ensemble_with_a_sequential_member(tmp_path):
    c = case("breast_cancer")
    lstm = get_entry(ModelType.LSTM).cls(c.task, 2, {"max_epochs": 5, "hidden_size": 8}, 0, 1)
    lstm.fit(c.X[:, None, :], c.y)  # one-step windows: the same rows as the tabular members
    choice = EnsembleChoice("blend", [0.7, 0.3], None, [0, 3], math.nan, {})
    model = EnsembleModel([c.models[0], lstm], choice, c.task, 2)
    assert model.sequential == [False, True]
    inputs = {"tabular": c.X_valid, "sequence": c.X_valid[:, None, :]}
    expected = 0.7 * c.valid[0] + 0.3 * lstm.predict_proba(inputs["sequence"])
    np.testing.assert_allclose(model.predict_proba(inputs), expected)
    with pytest.raises(DataError):
        model.predict(c.X_valid)  # a 2-D matrix cannot feed the LSTM
    model.save(tmp_path / "seq")
    loaded = EnsembleModel.load(tmp_path / "seq")
    np.testing.assert_array_equal(loaded.predict_proba(inputs), model.predict_proba(inputs))
    np.testing.assert_array_equal(loaded.predict(inputs), model.predict(inputs))
    # LSTMs report no importances: the average covers the members that do
    np.testing.assert_allclose(model.feature_importances_, c.models[0].feature_importances_)


def test_a_bag_averages_its_models_and_round_trips(tmp_path):
    c = case("wine")
    bag = Bag(c.models[:2], c.task)
    expected = (c.models[0].predict_proba(c.X_valid) + c.models[1].predict_proba(c.X_valid)) / 2
    np.testing.assert_allclose(bag.predict_proba(c.X_valid), expected)
    np.testing.assert_array_equal(bag.predict(c.X_valid), expected.argmax(axis=1))
    choice = EnsembleChoice("single", [1.0], None, [0], math.nan, {})
    EnsembleModel([bag], choice, c.task, c.k).save(tmp_path / "bagged")
    loaded = EnsembleModel.load(tmp_path / "bagged")
    assert isinstance(loaded.members[0], Bag) and len(loaded.members[0].models) == 2
    np.testing.assert_allclose(loaded.predict_proba(c.X_valid), expected)


def test_importing_the_modules_does_not_import_jax():
    code = "import sys, pmls.ml.ensemble, pmls.ml.ensemble_model; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _weighted(method: str, weights: np.ndarray) -> EnsembleChoice:
    return EnsembleChoice(method, [float(w) for w in weights], None, list(range(len(weights))), math.nan, {})


def _assert_serves(model: EnsembleModel, c: Case, expected: np.ndarray) -> None:
    if c.task is Task.REGRESSION:
        np.testing.assert_array_equal(model.predict(c.X_valid), expected)
        with pytest.raises(DataError):
            model.predict_proba(c.X_valid)
        return
    np.testing.assert_array_equal(model.predict_proba(c.X_valid), expected)
    np.testing.assert_array_equal(model.predict(c.X_valid), expected.argmax(axis=1))

"""The behaviour suite every zoo family passes, parametrised from the registry x task."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import KFold, train_test_split

from pmls.contracts import ModelType, Task
from pmls.ml.errors import DataError
from pmls.ml.sequences import build_sequences
from pmls.ml.zoo import REGISTRY, ZooModel, get_entry, load_model
from pmls.ml.zoo.nets import TorchModel

FAMILIES = list(REGISTRY)
CASES = [(family, task) for family in FAMILIES for task in Task]
# Budgets small enough for the suite to run in seconds; early stopping still decides within them.
FAST = {
    ModelType.LIGHTGBM: {"num_boost_round": 300},
    ModelType.XGBOOST: {"num_boost_round": 300},
    ModelType.RANDOM_FOREST: {"n_estimators": 60},
    ModelType.NEURAL_NETWORK: {"max_epochs": 60},
    ModelType.LSTM: {"max_epochs": 25, "hidden_size": 24},
}
# Params that make exactly `rounds` loop iterations (no early stopping) for the callback tests.
FIXED_LOOP = {
    ModelType.LIGHTGBM: ({"num_boost_round": 12, "early_stopping_rounds": 100}, 12),
    ModelType.XGBOOST: ({"num_boost_round": 12, "early_stopping_rounds": 100}, 12),
    ModelType.RANDOM_FOREST: ({"n_estimators": 20}, 10),
    ModelType.NEURAL_NETWORK: ({"max_epochs": 6, "early_stopping_rounds": 100}, 6),
    ModelType.LSTM: ({"max_epochs": 4, "early_stopping_rounds": 100, "hidden_size": 8}, 4),
}
SEQ_LEN = 5


@dataclasses.dataclass
class Data:
    X: np.ndarray
    y: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    categorical: dict[int, int] = dataclasses.field(default_factory=dict)


def sequence_set(task: Task, n_entities: int = 80, steps: int = 25, seed: int = 0):
    """AR(1) series per entity; the target needs the two previous steps plus a categorical regime."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n_entities, steps))
    for t in range(1, steps):
        x[:, t] = 0.6 * x[:, t - 1] + rng.normal(size=n_entities)
    lag1 = np.pad(x, ((0, 0), (1, 0)))[:, :-1].ravel()
    lag2 = np.pad(x, ((0, 0), (2, 0)))[:, :-2].ravel()
    entity = np.repeat(np.arange(n_entities), steps)
    regime = rng.integers(0, 3, n_entities)[entity].astype(np.float32)
    signal = lag1 - lag2 + 0.8 * (regime - 1)
    regime[rng.random(len(regime)) < 0.1] = np.nan  # missing codes must not break anything
    X = np.column_stack([x.ravel(), rng.normal(size=len(entity)), regime]).astype(np.float32)
    if task is Task.REGRESSION:
        y = signal + 0.3 * rng.normal(size=len(signal))
    elif task is Task.BINARY:
        y = (signal > np.median(signal)).astype(int)
    else:
        y = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3]))
    shuffle = rng.permutation(len(y))  # windows must follow entity and time, not row order
    order = np.tile(np.arange(steps), n_entities)[shuffle]
    return build_sequences(X[shuffle], entity[shuffle], order, SEQ_LEN), y[shuffle], entity[shuffle]


@cache
def dataset(sequential: bool, task: Task) -> Data:
    if sequential:
        X, y, entity = sequence_set(task)
        parts = [entity < 50, (entity >= 50) & (entity < 65), entity >= 65]  # split by entity
        pairs = [(X[p], y[p]) for p in parts]
        return Data(*pairs[0], *pairs[1], *pairs[2], categorical={2: 3})
    loader = {Task.BINARY: load_breast_cancer, Task.MULTICLASS: load_wine, Task.REGRESSION: load_diabetes}
    X, y = loader[task](return_X_y=True)
    strat = None if task is Task.REGRESSION else y
    X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=strat)
    strat = None if task is Task.REGRESSION else y_rest
    X_tr, X_va, y_tr, y_va = train_test_split(X_rest, y_rest, test_size=0.25, random_state=0, stratify=strat)
    return Data(X_tr, y_tr, X_va, y_va, X_test, y_test)


def build(family: ModelType, task: Task, seed: int = 0, **params) -> ZooModel:
    return get_entry(family).build(task, params={**FAST[family], **params}, seed=seed)


def fit(family: ModelType, task: Task, seed: int = 0, **params) -> ZooModel:
    d = dataset(REGISTRY[family].sequential, task)
    model = build(family, task, seed, **params)
    return model.fit(d.X, d.y, X_valid=d.X_valid, y_valid=d.y_valid, categorical=d.categorical)


@cache
def fitted(family: ModelType, task: Task) -> ZooModel:
    return fit(family, task)


def outputs(model: ZooModel, X: np.ndarray) -> np.ndarray:
    return model.predict(X) if model.task is Task.REGRESSION else model.predict_proba(X)


@pytest.mark.parametrize(("family", "task"), CASES)
def test_predictions_have_the_promised_shapes(family, task):
    model, d = fitted(family, task), dataset(REGISTRY[family].sequential, task)
    pred = model.predict(d.X_test)
    assert pred.shape == (len(d.X_test),)
    if task is Task.REGRESSION:
        assert pred.dtype == np.float64 and np.isfinite(pred).all()
        with pytest.raises(DataError):
            model.predict_proba(d.X_test)
        return
    proba = model.predict_proba(d.X_test)
    k = 2 if task is Task.BINARY else 3
    assert proba.shape == (len(d.X_test), k) and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert pred.dtype == np.int64 and np.array_equal(pred, proba.argmax(axis=1))
    assert model.best_iteration_ is None or model.best_iteration_ >= 1


@pytest.mark.parametrize(("family", "task"), CASES)
def test_scores_clearly_beat_chance(family, task):
    model, d = fitted(family, task), dataset(REGISTRY[family].sequential, task)
    if task is Task.BINARY:
        assert roc_auc_score(d.y_test, model.predict_proba(d.X_test)[:, 1]) > 0.9
    elif task is Task.MULTICLASS:
        assert accuracy_score(d.y_test, model.predict(d.X_test)) > 0.8  # chance is about 0.4
    elif REGISTRY[family].sequential:
        assert (
            r2_score(d.y_test, model.predict(d.X_test)) > 0.6
        )  # the mean predicts 0; current row alone ~0.2
    else:
        assert diabetes_cv_r2(family) > 0.25


def diabetes_cv_r2(family: ModelType) -> float:
    """Pooled 5-fold out-of-fold R2: one 110-row test split is too noisy to judge a family."""
    X, y = load_diabetes(return_X_y=True)
    oof = np.zeros_like(y)
    for train, test in KFold(5, shuffle=True, random_state=0).split(X):
        X_tr, X_va, y_tr, y_va = train_test_split(X[train], y[train], test_size=0.2, random_state=0)
        model = build(family, Task.REGRESSION).fit(X_tr, y_tr, X_valid=X_va, y_valid=y_va)
        oof[test] = model.predict(X[test])
    return r2_score(y, oof)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_predictions(family):
    d = dataset(REGISTRY[family].sequential, Task.BINARY)
    first = fitted(family, Task.BINARY).predict_proba(d.X_test)
    assert np.array_equal(fit(family, Task.BINARY).predict_proba(d.X_test), first)
    if family in (ModelType.RANDOM_FOREST, ModelType.NEURAL_NETWORK, ModelType.LSTM):
        # The seed is really used (GBMs without bagging are deterministic whatever the seed).
        assert not np.array_equal(fit(family, Task.BINARY, seed=1).predict_proba(d.X_test), first)


@pytest.mark.parametrize("family", FAMILIES)
def test_fits_in_parallel_threads_stay_deterministic(family):
    # Workers train trials in a thread pool: one fit must not disturb another's random draws.
    d = dataset(REGISTRY[family].sequential, Task.BINARY)
    with ThreadPoolExecutor(2) as pool:
        models = list(pool.map(lambda _: fit(family, Task.BINARY), range(2)))
    expected = fitted(family, Task.BINARY).predict_proba(d.X_test)
    for model in models:
        assert np.array_equal(model.predict_proba(d.X_test), expected)


@pytest.mark.parametrize(("family", "task"), CASES)
def test_save_load_round_trip(family, task, tmp_path):
    model, d = fitted(family, task), dataset(REGISTRY[family].sequential, task)
    model.save(tmp_path / "m")
    for loaded in (
        load_model(tmp_path / "m"),
        type(model).load(tmp_path / "m"),
    ):
        assert type(loaded) is type(model)
        assert np.array_equal(outputs(loaded, d.X_test), outputs(model, d.X_test))
        assert loaded.best_iteration_ == model.best_iteration_
        if model.feature_importances_ is None:
            assert loaded.feature_importances_ is None
        else:
            assert np.array_equal(loaded.feature_importances_, model.feature_importances_)


def test_loading_checks_the_family(tmp_path):
    fitted(ModelType.LIGHTGBM, Task.BINARY).save(tmp_path)
    with pytest.raises(DataError, match="LIGHTGBM"):
        REGISTRY[ModelType.XGBOOST].cls.load(tmp_path)
    with pytest.raises(DataError, match="meta.json"):
        load_model(tmp_path / "nothing-here")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_validation", [True, False])
def test_callbacks_see_every_round(family, with_validation):
    params, rounds = FIXED_LOOP[family]
    d = dataset(REGISTRY[family].sequential, Task.BINARY)
    calls = []
    valid = {"X_valid": d.X_valid, "y_valid": d.y_valid} if with_validation else {}
    model = get_entry(family).build(Task.BINARY, params=params)
    model.fit(d.X, d.y, **valid, callbacks=[lambda i, total, loss: calls.append((i, total, loss))])
    assert [c[:2] for c in calls] == [(i, rounds) for i in range(1, rounds + 1)]
    if with_validation:
        assert all(isinstance(c[2], float) and np.isfinite(c[2]) for c in calls)
    else:
        assert all(c[2] is None for c in calls)


class Stop(Exception):
    pass


@pytest.mark.parametrize("family", FAMILIES)
def test_an_exception_from_a_callback_stops_fit(family):
    params, _ = FIXED_LOOP[family]
    d = dataset(REGISTRY[family].sequential, Task.BINARY)
    calls = []

    def cancel(i, total, loss):
        calls.append(i)
        if i == 3:
            raise Stop

    model = get_entry(family).build(Task.BINARY, params=params)
    with pytest.raises(Stop):
        model.fit(d.X, d.y, X_valid=d.X_valid, y_valid=d.y_valid, callbacks=[cancel])
    assert calls == [1, 2, 3]  # no round ran after the one that raised
    with pytest.raises(NotFittedError):
        model.predict(d.X_test)


def one_signal_column(family: ModelType, n: int = 600, seed: int = 0):
    """Five noise columns; the label depends (noisily) on column 0 only."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = (X[:, 0] + rng.normal(scale=1.0, size=n) > 0).astype(int)
    if REGISTRY[family].sequential:
        X = build_sequences(X, np.arange(n) // 20, np.arange(n), 3)
    return X, y


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_importances_point_at_the_signal(family):
    X, y = one_signal_column(family)
    model = build(family, Task.BINARY).fit(X, y)
    if model.feature_importances_ is None:
        assert issubclass(REGISTRY[family].cls, TorchModel)  # only the nets may have none
        return
    assert model.feature_importances_.shape == (5,)
    assert model.feature_importances_.sum() == pytest.approx(1.0)
    assert model.feature_importances_.argmax() == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_weight_shifts_predictions_towards_the_heavy_class(family):
    X, y = one_signal_column(family)
    X_new, _ = one_signal_column(family, seed=1)
    # Few rounds: a booster run long on noisy rows memorises them and the weights matter less.
    short = {"num_boost_round": 30} if family in (ModelType.LIGHTGBM, ModelType.XGBOOST) else {}
    plain = build(family, Task.BINARY, **short).fit(X, y)
    heavy = build(family, Task.BINARY, **short).fit(X, y, sample_weight=np.where(y == 1, 5.0, 1.0))
    assert heavy.predict(X_new).mean() > plain.predict(X_new).mean() + 0.1  # share predicted as class 1


@pytest.mark.parametrize("family", FAMILIES)
def test_categorical_codes_with_missing_and_unseen_values(family):
    rng = np.random.default_rng(1)
    n = 800
    code = rng.integers(0, 5, n).astype(np.float32)
    effect = np.array([2.0, -1.0, 0.5, -2.0, 1.0])[code.astype(int)]  # not monotone in the code
    y = effect + 0.3 * rng.normal(size=n)
    code[rng.random(n) < 0.1] = np.nan
    X = np.column_stack([rng.normal(size=n), code]).astype(np.float32)
    X_new = np.array([[0.0, np.nan], [0.0, 7.0], [0.0, -1.0], [0.0, 3.0]], dtype=np.float32)
    if REGISTRY[family].sequential:
        X = build_sequences(X, np.arange(n) // 20, np.arange(n), 3)
        X_new = np.repeat(X_new[:, None, :], 3, axis=1)
    model = build(family, Task.REGRESSION).fit(X[:600], y[:600], categorical={1: 5})
    assert r2_score(y[600:], model.predict(X[600:])) > 0.6
    assert np.isfinite(model.predict(X_new)).all()  # NaN, unseen and negative codes all predict


@pytest.mark.parametrize("family", FAMILIES)
def test_predict_before_fit_raises(family, tmp_path):
    model = get_entry(family).build(Task.BINARY)
    X = dataset(REGISTRY[family].sequential, Task.BINARY).X_test
    for call in (model.predict, model.predict_proba):
        with pytest.raises(NotFittedError):
            call(X)
    with pytest.raises(NotFittedError):
        model.save(tmp_path)
    assert model.params is None and not hasattr(model, "best_iteration_")  # __init__ only stores


def test_lstm_ignores_padding():
    model, d = fitted(ModelType.LSTM, Task.REGRESSION), dataset(True, Task.REGRESSION)
    longer = np.concatenate([np.full_like(d.X_test[:, :2], np.nan), d.X_test], axis=1)
    np.testing.assert_allclose(model.predict(longer), model.predict(d.X_test), rtol=1e-5, atol=1e-6)
    changed = d.X_test.copy()
    changed[:, -1, 0] += 3.0  # the last step is row i itself: it must matter
    assert not np.allclose(model.predict(changed), model.predict(d.X_test))


def test_registry_covers_every_family_but_the_ensemble():
    assert set(REGISTRY) == set(ModelType) - {ModelType.ENSEMBLE}
    for family, entry in REGISTRY.items():
        assert entry.model_type is family and entry.cls.model_type is family
        assert entry.sequential is entry.cls.sequential
        assert set(entry.default_space) <= entry.known_params
        with pytest.raises(dataclasses.FrozenInstanceError):
            entry.sequential = not entry.sequential  # type: ignore[misc]
    for bad in (ModelType.ENSEMBLE, "NOPE"):
        with pytest.raises(DataError) as info:
            get_entry(bad)
        assert info.value.field == "model_type"


def a_point(space) -> dict:
    """One value per range of a search space: the low end, or the last choice."""
    return {
        name: rng.choices[-1]
        if rng.type == "categorical"
        else (int(rng.low) if rng.type == "int" else rng.low)
        for name, rng in space.items()
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_every_default_space_name_is_accepted(family):
    X, y = one_signal_column(family, n=200)
    params = {**a_point(REGISTRY[family].default_space), **FIXED_LOOP[family][0]}
    model = get_entry(family).build(Task.BINARY, params=params).fit(X, y)
    assert model.predict_proba(X).shape == (200, 2)


@pytest.mark.parametrize("family", [ModelType.RANDOM_FOREST, ModelType.NEURAL_NETWORK, ModelType.LSTM])
def test_unknown_parameters_are_refused_by_strict_families(family):
    X, y = one_signal_column(family, n=100)
    with pytest.raises(DataError, match="hiden_size"):
        get_entry(family).build(Task.BINARY, params={"hiden_size": 3}).fit(X, y)

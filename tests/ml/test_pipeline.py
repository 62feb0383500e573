"""The job pipeline end to end for every family and task, and its leakage guarantees.

prepare -> cross_validate -> fit_final -> save_bundle -> load_bundle().predict(raw rows), on small
time-stamped panels; then: feature selection, balancing and augmentation only ever see training rows,
the time-series folds never validate on the past, class balancing helps an imbalanced set, and the
validation metric is checked against the task.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

import pmls.ml.augment as augment
import pmls.ml.balancing as balancing
import pmls.ml.fitting as fitting
import pmls.ml.prepared as prepared_module
from pmls.contracts import DatasetConfig, ModelType, Task, ValidationConfig
from pmls.ml.bundle import load_bundle, save_bundle
from pmls.ml.data import prepare_splits
from pmls.ml.errors import DataError
from pmls.ml.final import fit_final
from pmls.ml.fitting import FitOptions, cross_validate, fit_model, predict_scores
from pmls.ml.metrics import compute_metrics
from pmls.ml.prepared import prepare, resolve_metric
from pmls.ml.zoo import REGISTRY

START = datetime(2024, 1, 1)
FOLDS = 3
SEQ_LEN = 5
# Small budgets: the whole file must run in well under a minute on two cores.
PARAMS = {
    ModelType.LIGHTGBM: {"num_boost_round": 200, "early_stopping_rounds": 20},
    ModelType.XGBOOST: {"num_boost_round": 200, "early_stopping_rounds": 20},
    ModelType.RANDOM_FOREST: {"n_estimators": 40, "min_samples_leaf": 3},
    ModelType.NEURAL_NETWORK: {"max_epochs": 20, "hidden_size": 32, "learning_rate": 3e-3},
    ModelType.LSTM: {"max_epochs": 20, "hidden_size": 16, "learning_rate": 1e-2},
}
NO_CV = ValidationConfig(cv_strategy="none")


# --- data ------------------------------------------------------------------------------------


def panel(task: Task, n_entities: int = 40, steps: int = 30, seed: int = 0) -> pl.DataFrame:
    """One row per entity and day; the target depends on x1 (AR(1)), its previous value, x2 and kind.

    ``z`` is noise. Labels are strings so the prediction frame's ``proba_<class>`` names are real.
    """
    rng = np.random.default_rng(seed)
    x1 = np.zeros((steps, n_entities))
    for t in range(1, steps):
        x1[t] = 0.6 * x1[t - 1] + rng.normal(size=n_entities)
    lag = np.vstack([np.zeros((1, n_entities)), x1[:-1]])
    x2 = rng.normal(size=(steps, n_entities))
    kinds = rng.choice(["a", "b", "c"], size=(steps, n_entities))
    effect = np.select([kinds == "a", kinds == "b"], [0.8, 0.0], -0.8)
    signal = (x1 + 0.6 * lag + 0.8 * x2 + effect).ravel()
    noisy = signal + rng.normal(scale=0.4, size=signal.size)
    if task is Task.REGRESSION:
        target: list | np.ndarray = 3.0 * noisy + 10.0
    elif task is Task.BINARY:
        target = np.where(noisy > 0, "yes", "no").tolist()
    else:
        cuts = np.quantile(noisy, [1 / 3, 2 / 3])
        target = np.array(["low", "mid", "high"])[np.searchsorted(cuts, noisy)].tolist()
    return pl.DataFrame(
        {
            "ts": [START + timedelta(days=t) for t in range(steps) for _ in range(n_entities)],
            "id": [f"e{i}" for _ in range(steps) for i in range(n_entities)],
            "x1": x1.ravel(),
            "x2": x2.ravel(),
            "kind": kinds.ravel(),
            "z": rng.normal(size=signal.size),
            "target": target,
        }
    )


def panel_config(**kw) -> DatasetConfig:
    return DatasetConfig(
        source="mem.parquet",
        target="target",
        timestamp_column="ts",
        entity_column="id",
        sequence_length=SEQ_LEN,
        **kw,
    )


def options(cfg: DatasetConfig, family: ModelType, params: dict | None = None) -> FitOptions:
    return FitOptions.from_config(
        cfg, family, PARAMS[family] if params is None else params, seed=0, num_threads=1
    )


def majority_share(y: np.ndarray) -> float:
    return float(np.bincount(y).max() / len(y))


def assert_beats_baseline(task: Task, prepared, metrics: dict[str, float], split: str = "test") -> None:
    """Clearly better than a model that ignores the features (the class prior / the mean)."""
    y = prepared.y[split]
    if task is Task.BINARY:
        assert metrics["roc_auc"] > 0.8
        assert metrics["accuracy"] > majority_share(y) + 0.15
    elif task is Task.MULTICLASS:
        assert metrics["accuracy"] > majority_share(y) + 0.2
        assert metrics["log_loss"] < math.log(3) - 0.25
    else:
        assert metrics["rmse"] < 0.7 * float(np.std(y))
        assert metrics["r2"] > 0.5


# --- every family x task, end to end ---------------------------------------------------------

CASES = [
    pytest.param(family, task, id=f"{family.value}-{task.value}") for family in REGISTRY for task in Task
]


@pytest.mark.parametrize(("family", "task"), CASES)
def test_family_end_to_end(tmp_path, family, task):
    df = panel(task)
    cfg = panel_config()
    splits = prepare_splits(df, cfg, seed=0)
    assert splits.task is task
    prepared = prepare(splits, cfg, ValidationConfig(cv_folds=FOLDS), seed=0)
    assert prepared.plan.strategy == "timeseries" and len(prepared.plan.folds) == FOLDS
    assert "id" not in prepared.names  # the entity identifies rows, it is not a feature
    opts = options(cfg, family)

    folds = []
    cv = cross_validate(prepared, opts, on_fold=lambda index, value: folds.append(index))
    assert cv.metric == prepared.metric == resolve_metric(task, None)
    assert len(cv.scores) == FOLDS and folds == list(range(FOLDS))
    assert all(math.isfinite(s) for s in cv.scores) and len(cv.best_iterations) == FOLDS

    final = fit_final(prepared, opts, cv_scores=cv.scores)
    m = final.metrics
    assert m.cross_validation_scores == cv.scores
    for value in (m.training_accuracy, m.validation_accuracy, m.training_loss, m.validation_loss):
        assert value is not None and math.isfinite(value)
    assert prepared.metric in m.validation_metrics and prepared.metric in m.test_metrics
    assert m.validation_accuracy == m.validation_metrics["r2" if task is Task.REGRESSION else "accuracy"]
    assert_beats_baseline(task, prepared, m.test_metrics)
    assert final.seq_len == (SEQ_LEN if family is ModelType.LSTM else None)

    directory = save_bundle(
        tmp_path / "bundle", final=final, prepared=prepared, cfg=cfg, model_type=family, params=opts.params
    )
    bundle = load_bundle(directory)
    assert bundle.model_type is family and bundle.task is task and bundle.classes == prepared.classes
    # Raw rows in time order, target dropped: the LSTM's windows then see each entity's history, as
    # the prepared windows did, so the test rows must score exactly as at fit time.
    raw = pl.concat([splits.train, splits.validation, splits.test]).drop("target")
    out = bundle.predict(raw.to_pandas()).tail(splits.test.height).reset_index(drop=True)
    expected = predict_scores(final.model, task, prepared.inputs("test", final.seq_len))
    if task is Task.REGRESSION:
        assert list(out.columns) == ["prediction"]
        np.testing.assert_allclose(out["prediction"], expected, rtol=1e-5, atol=1e-5)  # float32 sums
    else:
        assert list(out.columns) == ["prediction"] + [f"proba_{c}" for c in prepared.classes]
        proba = out[[f"proba_{c}" for c in prepared.classes]].to_numpy()
        np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        assert set(out["prediction"]) <= set(prepared.classes)
    # The test figures come from the refit that never saw the test period, not from the delivered model.
    assert final.evaluated_with == ("train", "validation") and "test" in final.fitted_on
    assert compute_metrics(task, prepared.y["test"], final.test_scores) == pytest.approx(m.test_metrics)


# --- leakage ---------------------------------------------------------------------------------


def test_feature_selection_sees_training_rows_only(monkeypatch):
    df = panel(Task.BINARY).with_columns(
        [pl.Series(f"noise{i}", np.random.default_rng(i).normal(size=1200)) for i in range(4)]
    )
    cfg = panel_config(feature_selection=True)
    splits = prepare_splits(df, cfg, seed=0)
    seen = {}
    real = prepared_module.select_features

    def spy(X, y, names, **kw):
        seen.update(X=X.copy(), y=np.array(y), names=list(names), plan=kw["plan"])
        return real(X, y, names, **kw)

    monkeypatch.setattr(prepared_module, "select_features", spy)
    prepared = prepare(splits, cfg, ValidationConfig(cv_folds=FOLDS), seed=0)
    before = prepared.preprocessor.transform(splits.train)
    assert len(seen["X"]) == splits.train.height == len(prepared.y["train"])
    np.testing.assert_array_equal(seen["X"], before)
    np.testing.assert_array_equal(seen["y"], prepared.y["train"])
    assert seen["plan"] is prepared.plan
    # Selection fits on the folds' training positions only, and those are all training rows (the plan's last
    # fold validates on the validation period, which selection never reads).
    assert all(f.train.max() < splits.train.height for f in prepared.plan.folds)
    # What survived is exactly the kept columns of the training matrix, in every split.
    assert prepared.selection is not None and prepared.names == prepared.selection.kept
    np.testing.assert_array_equal(prepared.X["train"], before[:, prepared.kept])
    for split, frame in (("validation", splits.validation), ("test", splits.test)):
        np.testing.assert_array_equal(
            prepared.X[split], prepared.preprocessor.transform(frame)[:, prepared.kept]
        )
    assert {"x1", "x2"} <= set(prepared.names)


def record(monkeypatch, module, name: str) -> list[dict]:
    """Wrap ``module.name`` so every call's inputs and outputs are kept."""
    calls: list[dict] = []
    real = getattr(module, name)

    def spy(X, y, **kw):
        out = real(X, y, **kw)
        calls.append({"X": np.array(X), "y": np.array(y), "out_X": out[0]})
        return out

    monkeypatch.setattr(module, name, spy)
    return calls


def test_balancing_and_augmentation_touch_training_rows_only(monkeypatch):
    cfg = panel_config(class_balancing=True, balancing_method="oversample", data_augmentation=True)
    prepared = prepare(prepare_splits(panel(Task.BINARY), cfg, seed=0), cfg, ValidationConfig(cv_folds=FOLDS))
    oversampled = record(monkeypatch, balancing, "oversample")
    augmented = record(monkeypatch, augment, "augment_tabular")
    opts = options(cfg, ModelType.LIGHTGBM, {"num_boost_round": 20})
    cross_validate(prepared, opts)
    fit_final(prepared, opts)

    X, y = prepared.X["train"], prepared.y["train"]
    refit = (np.concatenate([X, prepared.X["validation"]]), np.concatenate([y, prepared.y["validation"]]))
    every = (np.concatenate([refit[0], prepared.X["test"]]), np.concatenate([refit[1], prepared.y["test"]]))
    # A fold's training rows while validating; the training period for the fit whose validation metrics are
    # reported; training + validation for the refit whose test metrics are reported. Test rows only in the
    # delivered refit on every row, which no figure comes from; never the rows being scored.
    expected = [(X[f.train], y[f.train]) for f in prepared.plan.folds] + [(X, y), refit, every]
    assert len(oversampled) == len(augmented) == FOLDS + 3
    for call, (rows, labels) in zip(oversampled, expected, strict=True):
        np.testing.assert_array_equal(call["X"], rows)
        np.testing.assert_array_equal(call["y"], labels)
    for over, aug in zip(oversampled, augmented, strict=True):
        np.testing.assert_array_equal(aug["X"], over["out_X"])  # augmentation only sees those rows too


def test_class_weights_and_sequence_augmentation_touch_training_rows_only(monkeypatch):
    cfg = panel_config(class_balancing=True, data_augmentation=True)
    prepared = prepare(prepare_splits(panel(Task.BINARY), cfg, seed=0), cfg, ValidationConfig(cv_folds=FOLDS))
    sequences = record(monkeypatch, augment, "augment_sequences")
    weights: list[int] = []
    real_weights = balancing.sample_weights
    monkeypatch.setattr(
        balancing, "sample_weights", lambda y, k: weights.append(len(y)) or real_weights(y, k)
    )
    opts = options(cfg, ModelType.LSTM, {"max_epochs": 2, "hidden_size": 8})
    cross_validate(prepared, opts)
    fit_final(prepared, opts)

    windows = prepared.inputs("train", SEQ_LEN)
    refit = np.concatenate([windows, prepared.inputs("validation", SEQ_LEN)])
    every = np.concatenate([refit, prepared.inputs("test", SEQ_LEN)])
    expected = [windows[f.train] for f in prepared.plan.folds] + [windows, refit, every]
    assert len(sequences) == FOLDS + 3
    for call, rows in zip(sequences, expected, strict=True):
        np.testing.assert_array_equal(call["X"], rows)
    # Class weights are computed on the (augmented) training rows: twice a fold's rows, no more.
    assert weights == [2 * len(rows) for rows in expected]


def test_timeseries_folds_never_validate_on_the_past():
    cfg = panel_config()
    splits = prepare_splits(panel(Task.REGRESSION), cfg, seed=0)
    prepared = prepare(splits, cfg, ValidationConfig(cv_folds=4), seed=0)
    assert prepared.plan.strategy == "timeseries" and len(prepared.plan.folds) == 4
    # Positions run on from the training period into the validation period, which the last fold validates on.
    assert prepared.plan.spans_validation
    times = pl.concat([splits.train, splits.validation]).get_column("ts").to_numpy()
    for fold in prepared.plan.folds:
        assert times[fold.train].max() < times[fold.valid].min()
        assert not set(fold.train.tolist()) & set(fold.valid.tolist())
    n_train = splits.train.height
    last = prepared.plan.folds[-1]
    assert last.valid.tolist() == list(range(n_train, n_train + splits.validation.height))
    assert last.train.tolist() == list(range(n_train))  # every training row, no gap asked for
    assert all(fold.valid.max() < n_train for fold in prepared.plan.folds[:-1])
    cv = cross_validate(prepared, options(cfg, ModelType.LIGHTGBM))
    assert cv.oof.shape[0] == n_train + splits.validation.height
    assert np.isfinite(cv.oof[n_train:]).all()  # the validation period is predicted out of fold
    # ... and the periods themselves run forward: training, then validation, then test.
    train_times = splits.train.get_column("ts")
    assert (
        train_times.max()
        < splits.validation.get_column("ts").min()
        <= splits.validation.get_column("ts").max()
    )
    assert splits.validation.get_column("ts").max() <= splits.test.get_column("ts").min()


# --- class balancing: the acceptance check ---------------------------------------------------


def imbalanced(n: int = 6000, seed: int = 0) -> pl.DataFrame:
    """About 5% positives, with a real but weak signal in x1 and x2; one row per hour."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    logit = -3.8 + 1.3 * x1 + 0.8 * x2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pl.DataFrame(
        {
            "ts": [START + timedelta(hours=i) for i in range(n)],
            "x1": x1,
            "x2": x2,
            "x3": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "target": y,
        }
    )


# Small trees: with LightGBM's defaults a weighted fit overfits the few positives, and early stopping on
# the (unweighted) validation loss lets it run on until most of the balancing has worn off.
WEAK_SIGNAL_PARAMS = {"num_leaves": 4, "learning_rate": 0.05, "min_child_samples": 40}


def balanced_accuracy(df: pl.DataFrame, **kw) -> float:
    cfg = DatasetConfig(source="mem.parquet", target="target", timestamp_column="ts", **kw)
    prepared = prepare(prepare_splits(df, cfg, seed=0), cfg, NO_CV, seed=0)
    final = fit_final(prepared, options(cfg, ModelType.LIGHTGBM, WEAK_SIGNAL_PARAMS))
    return final.metrics.test_metrics["balanced_accuracy"]


def test_class_balancing_raises_balanced_accuracy():
    df = imbalanced()
    assert 0.03 < df["target"].mean() < 0.08
    plain = balanced_accuracy(df)
    weighted = balanced_accuracy(df, class_balancing=True)
    oversampled = balanced_accuracy(df, class_balancing=True, balancing_method="oversample")
    # Seed 0 gives 0.50 / 0.79 / 0.77; over seeds 0-4 balancing gained at least 0.14.
    assert plain < 0.6  # without balancing the rare class is hardly ever predicted
    assert weighted > plain + 0.1
    assert oversampled > plain + 0.1


# --- augmentation ----------------------------------------------------------------------------


# Sequences have one augmentation (jitter and scaling); the method only chooses among tabular ones.
@pytest.mark.parametrize(
    ("family", "method"),
    [(ModelType.RANDOM_FOREST, "auto"), (ModelType.RANDOM_FOREST, "mixup"), (ModelType.LSTM, "auto")],
)
def test_augmentation_still_learns(family, method):
    cfg = panel_config(data_augmentation=True, augmentation_method=method)
    prepared = prepare(prepare_splits(panel(Task.MULTICLASS), cfg, seed=0), cfg, NO_CV)
    opts = options(cfg, family)
    X, y = prepared.inputs("train", SEQ_LEN if family is ModelType.LSTM else None), prepared.y["train"]
    grown, _, _ = fitting._rebalance_and_augment(prepared, opts, X, y, sequential=family is ModelType.LSTM)
    assert len(grown) == 2 * len(X)
    final = fit_final(prepared, opts)
    assert_beats_baseline(Task.MULTICLASS, prepared, final.metrics.test_metrics)


# --- the validation metric -------------------------------------------------------------------


def test_resolve_metric_rejects_a_metric_of_another_task():
    assert resolve_metric(Task.REGRESSION, None) == "rmse"
    assert resolve_metric(Task.BINARY, "f1") == "f1"
    with pytest.raises(DataError, match="not a regression metric") as info:
        resolve_metric(Task.REGRESSION, "accuracy")
    assert info.value.field == "validation_config.metric"
    cfg = panel_config()
    splits = prepare_splits(panel(Task.MULTICLASS), cfg, seed=0)
    with pytest.raises(DataError) as info:
        prepare(splits, cfg, ValidationConfig(metric="rmse"))
    assert info.value.field == "validation_config.metric"


def test_chosen_metric_drives_cross_validation():
    cfg = panel_config()
    prepared = prepare(
        prepare_splits(panel(Task.BINARY), cfg, seed=0),
        cfg,
        ValidationConfig(metric="accuracy", cv_folds=FOLDS),
    )
    assert prepared.metric == "accuracy"
    opts = options(cfg, ModelType.LIGHTGBM)
    cv = cross_validate(prepared, opts)
    assert cv.metric == "accuracy"
    X, y = prepared.cv_rows()
    for fold, value in zip(prepared.plan.folds, cv.scores, strict=True):
        model = fit_model(prepared, opts, X[fold.train], y[fold.train], X[fold.valid], y[fold.valid])
        # Every fold is judged at the shared round (LightGBM: the best of the folds' mean validation loss).
        predicted = model.scores_at(X[fold.valid], cv.best_iterations[0]).argmax(axis=1)
        assert value == pytest.approx(float(np.mean(predicted == y[fold.valid])))

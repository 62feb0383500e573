"""LightGBM through the job pipeline (prepare -> cross_validate / fit_final): quality on known data sets,
progress callbacks and cancellation, the demo data set."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from pmls.contracts import DatasetConfig, ModelType, Task, ValidationConfig
from pmls.ml.bundle import load_bundle, save_bundle
from pmls.ml.data import prepare_splits
from pmls.ml.demo_data import DEMO_PERIODS, generate_demo_dataset
from pmls.ml.ensemble import metric_value
from pmls.ml.errors import DataError
from pmls.ml.final import MAX_ROUND_SCALE, fit_final
from pmls.ml.fitting import FitOptions, cross_validate, predict_scores
from pmls.ml.prepared import prepare
from pmls.ml.sources import FileAccess, load_source

NO_CV = ValidationConfig(cv_strategy="none")


def sklearn_frame(loader) -> pl.DataFrame:
    data = loader(as_frame=True)
    return pl.from_pandas(data.frame.rename(columns={data.target.name: "label"}))


def lightgbm(cfg: DatasetConfig, params: dict | None = None, seed: int = 0) -> FitOptions:
    # Tiny data trains fastest on one thread, and OpenMP spinning makes a busy machine very slow otherwise.
    return FitOptions.from_config(cfg, ModelType.LIGHTGBM, params, seed=seed, num_threads=1)


def fit(df: pl.DataFrame, vcfg: ValidationConfig = NO_CV, seed: int = 0, **kw):
    cfg = DatasetConfig(source="mem.parquet", target="label", **kw)
    splits = prepare_splits(df, cfg, seed=seed)
    prepared = prepare(splits, cfg, vcfg, seed=seed)
    return splits, prepared, fit_final(prepared, lightgbm(cfg, seed=seed))


def test_breast_cancer_binary():
    df = sklearn_frame(load_breast_cancer)
    cfg = DatasetConfig(source="mem.parquet", target="label")
    splits = prepare_splits(df, cfg, seed=0)
    prepared = prepare(splits, cfg, ValidationConfig(cv_folds=3), seed=0)
    assert splits.task is Task.BINARY and prepared.metric == "roc_auc"
    cv = cross_validate(prepared, lightgbm(cfg))
    assert cv.metric == "roc_auc" and len(cv.scores) == 3 and cv.mean > 0.95
    final = fit_final(prepared, lightgbm(cfg), cv_scores=cv.scores)
    metrics = final.metrics
    assert metrics.test_metrics["roc_auc"] > 0.95
    importance = metrics.feature_importance
    assert 0 < len(importance) <= 50 and abs(sum(importance.values()) - 1) < 0.05
    assert all(type(v) is float for v in importance.values())
    assert metrics.cross_validation_scores == cv.scores
    json.dumps(metrics.model_dump())  # plain floats all the way down


def test_no_cv_leaves_cross_validation_scores_empty():
    _, prepared, final = fit(sklearn_frame(load_breast_cancer))
    assert prepared.plan.folds == () and final.metrics.cross_validation_scores == []


def test_wine_multiclass():
    splits, prepared, final = fit(sklearn_frame(load_wine))
    assert splits.task is Task.MULTICLASS and prepared.classes == [0, 1, 2]
    assert final.metrics.test_metrics["accuracy"] > 0.85
    assert final.metrics.validation_loss == final.metrics.validation_metrics["log_loss"]


def test_diabetes_regression():
    # 66 test rows make one split's R2 noisy (0.26..0.46 across seeds): judge the mean of five splits.
    df = sklearn_frame(load_diabetes)
    scores = []
    for seed in range(5):
        splits, prepared, final = fit(df, seed=seed)
        scores.append(final.metrics.test_metrics["r2"])
    assert splits.task is Task.REGRESSION and prepared.classes is None
    assert np.mean(scores) > 0.3 and min(scores) > 0.2
    assert final.metrics.validation_loss == final.metrics.validation_metrics["rmse"]
    assert final.metrics.validation_accuracy == final.metrics.validation_metrics["r2"]


def test_predictions_carry_labels_and_probabilities(tmp_path, frame):
    df = frame.with_columns(pl.col("y").replace_strict({0: "stay", 1: "go"}).alias("label")).drop("y")
    splits, prepared, final = fit(df)
    cfg = DatasetConfig(source="mem.parquet", target="label")
    bundle = load_bundle(
        save_bundle(
            tmp_path / "b", final=final, prepared=prepared, cfg=cfg, model_type=ModelType.LIGHTGBM, params={}
        )
    )
    out = bundle.predict(splits.test.drop("label").to_pandas())
    assert list(out.columns) == ["prediction", "proba_go", "proba_stay"]
    assert set(out["prediction"]) <= {"go", "stay"}
    np.testing.assert_allclose(out[["proba_go", "proba_stay"]].sum(axis=1), 1.0)


def test_ensemble_is_not_a_single_family(frame):
    cfg = DatasetConfig(source="mem.parquet", target="y")
    prepared = prepare(prepare_splits(frame, cfg, seed=0), cfg, NO_CV)
    opts = FitOptions.from_config(cfg, ModelType.ENSEMBLE, None, seed=0)
    with pytest.raises(DataError, match="not a single model family") as info:
        fit_final(prepared, opts)
    assert info.value.field == "model_type"


@pytest.fixture
def small(frame):
    cfg = DatasetConfig(source="mem.parquet", target="y", timestamp_column="ts")
    return cfg, prepare(prepare_splits(frame, cfg, seed=0), cfg, NO_CV)


def test_callback_runs_every_round(small):
    cfg, prepared = small
    calls = []
    opts = lightgbm(cfg, {"num_boost_round": 30, "early_stopping_rounds": 1000})
    final = fit_final(prepared, opts, callbacks=[lambda i, total, loss: calls.append((i, total, loss))])
    first, refits = calls[:30], calls[30:]
    assert [(i, total) for i, total, _ in first] == [(i, 30) for i in range(1, 31)]
    assert all(isinstance(loss, float) for *_, loss in first)  # the validation loss of each round
    # Two refits with no validation: on training + validation (the test metrics), then on every row.
    assert refits and all(loss is None for *_, loss in refits)
    starts = [k for k, (i, _, _) in enumerate(refits) if i == 1]
    assert len(starts) == 2
    evaluated, delivered = refits[: starts[1]], refits[starts[1] :]
    assert [i for i, _, _ in delivered] == list(range(1, len(delivered) + 1))
    assert final.model.best_iteration_ == len(delivered) >= len(evaluated)


def _rounds_found(calls: list[tuple]) -> int:
    losses = [loss for *_, loss in calls if loss is not None]  # the first fit's validation loss per step
    return 1 + int(np.argmin(losses))  # the step early stopping keeps (first of equal losses)


@pytest.mark.parametrize("refit_all", [True, False])
def test_the_refit_scales_boosting_rounds_but_not_epochs(small, refit_all):
    cfg, prepared = small
    n = {s: len(prepared.y[s]) for s in ("train", "validation", "test")}
    fitted = n["train"] + n["validation"] + (n["test"] if refit_all else 0)
    grow = min(fitted / n["train"], MAX_ROUND_SCALE)
    for model_type, params in (
        (ModelType.LIGHTGBM, {"num_boost_round": 40, "early_stopping_rounds": 1000}),
        (ModelType.NEURAL_NETWORK, {"max_epochs": 12, "early_stopping_rounds": 1000, "hidden_size": 16}),
    ):
        calls: list[tuple] = []
        opts = FitOptions.from_config(cfg, model_type, params, seed=0)
        final = fit_final(
            prepared,
            opts,
            refit_all=refit_all,
            callbacks=[lambda i, total, loss, seen=calls: seen.append((i, total, loss))],
        )
        best = _rounds_found(calls)
        expected = round(best * grow) if model_type is ModelType.LIGHTGBM else best
        assert final.model.best_iteration_ == expected, model_type


def test_the_refit_takes_the_rounds_the_cv_folds_found_on_average(frame):
    cfg = DatasetConfig(source="mem.parquet", target="y", timestamp_column="ts")
    prepared = prepare(prepare_splits(frame, cfg, seed=0), cfg, ValidationConfig(cv_folds=3))
    fold_rows = np.mean([len(f.train) for f in prepared.plan.folds])
    every_row = sum(len(prepared.y[s]) for s in ("train", "validation", "test"))
    opts = lightgbm(cfg, {"num_boost_round": 200, "early_stopping_rounds": 1000})
    final = fit_final(prepared, opts, cv_iterations=[10, 20, 30])
    assert final.model.best_iteration_ == round(20 * min(every_row / fold_rows, MAX_ROUND_SCALE))
    # Without the folds' iterations: the first fit's best round on validation, scaled from the training rows.
    calls: list[tuple] = []
    fallback = fit_final(prepared, opts, callbacks=[lambda i, total, loss: calls.append((i, total, loss))])
    scale = min(every_row / len(prepared.y["train"]), MAX_ROUND_SCALE)
    assert fallback.model.best_iteration_ == round(_rounds_found(calls[:200]) * scale)


def test_every_row_reaches_the_delivered_model_but_not_the_test_figures(small):
    cfg, prepared = small
    opts = lightgbm(cfg)
    delivered = fit_final(prepared, opts)
    evaluated = fit_final(prepared, opts, refit_all=False)
    assert (delivered.fitted_on, delivered.evaluated_with) == (
        ("train", "validation", "test"),
        ("train", "validation"),
    )
    assert evaluated.fitted_on == evaluated.evaluated_with == ("train", "validation")
    # The test figures are those of the model that never saw the test period, in both cases.
    assert delivered.metrics.test_metrics == evaluated.metrics.test_metrics
    np.testing.assert_array_equal(delivered.test_scores, evaluated.test_scores)
    # The delivered model did learn from the test rows: it fits them better than the one that never saw them.
    X_test, y_test = prepared.inputs("test"), prepared.y["test"]
    seen = metric_value(Task.BINARY, y_test, predict_scores(delivered.model, Task.BINARY, X_test), "log_loss")
    unseen = metric_value(Task.BINARY, y_test, evaluated.test_scores, "log_loss")
    assert seen < unseen


def test_callbacks_reach_every_cv_fold(frame):
    cfg = DatasetConfig(source="mem.parquet", target="y", timestamp_column="ts")
    prepared = prepare(prepare_splits(frame, cfg, seed=0), cfg, ValidationConfig(cv_folds=3))
    calls, folds = [], []
    opts = lightgbm(cfg, {"num_boost_round": 10, "early_stopping_rounds": 1000})
    result = cross_validate(
        prepared,
        opts,
        callbacks=[lambda i, total, loss: calls.append(i)],
        on_fold=lambda index, value: folds.append((index, value)),
    )
    assert calls == list(range(1, 11)) * 3
    assert folds == list(enumerate(result.scores))


def test_exception_in_callback_stops_training(small):
    cfg, prepared = small
    seen = []

    def stop(iteration, total, loss):
        seen.append(iteration)
        if iteration == 5:
            raise KeyboardInterrupt("cancelled")  # not an Exception subclass: must still propagate

    with pytest.raises(KeyboardInterrupt):
        fit_final(prepared, lightgbm(cfg), callbacks=[stop])
    assert seen == [1, 2, 3, 4, 5]


def test_demo_dataset_is_learnable(tmp_path):
    path = generate_demo_dataset(tmp_path / "churn.parquet", rows_per_day=20)
    df = load_source(str(path), FileAccess.anywhere())
    assert 0.2 <= df["churned"].mean() <= 0.3
    cfg = DatasetConfig(
        source=str(path),
        target="churned",
        timestamp_column="event_time",
        entity_column="customer_id",
        **DEMO_PERIODS,
    )
    prepared = prepare(prepare_splits(df, cfg, seed=0), cfg, NO_CV, seed=0)
    final = fit_final(prepared, lightgbm(cfg))
    assert "customer_id" not in prepared.preprocessor.feature_names_  # the entity is not a feature
    assert final.metrics.test_metrics["roc_auc"] > 0.75


def test_a_bundle_knows_which_rows_it_was_fitted_on(small, frame, tmp_path):
    cfg, prepared = small
    splits = prepare_splits(frame, cfg, seed=0)
    final = fit_final(prepared, lightgbm(cfg), refit_all=False)
    fitted = pl.concat([splits.train, splits.validation])
    bundle = load_bundle(
        save_bundle(
            tmp_path / "b",
            final=final,
            prepared=prepared,
            cfg=cfg,
            model_type=ModelType.LIGHTGBM,
            params={},
            fitted_rows=fitted,
        )
    )
    assert bundle.fitted_on == ["train", "validation"]
    assert not bundle.unseen(splits.validation).any()
    assert bundle.unseen(splits.test).all()
    # Typed differently by another source, the same rows are still recognised.
    mixed = pl.concat([splits.test.head(5), splits.train.head(5)]).with_columns(pl.col("y").cast(pl.Float64))
    assert bundle.unseen(mixed).tolist() == [True] * 5 + [False] * 5
    assert bundle.unseen(splits.test.drop("y")) is None  # without the columns it hashed it cannot tell


@pytest.mark.parametrize("family", [ModelType.LIGHTGBM, ModelType.XGBOOST])
def test_every_fold_is_judged_at_the_round_best_on_average(frame, family):
    """Boosting folds are scored at one shared round (the best of the folds' mean validation loss), as lgb.cv
    does, not each at its own best round; the scores and out-of-fold predictions are those of that round."""
    from pmls.ml.fitting import fit_model, score, shared_round

    data = frame.with_columns(value=pl.col("x") * 3 + pl.col("count") + (pl.col("colour") == "red") * 2.0)
    cfg = DatasetConfig(source="mem.parquet", target="value", task=Task.REGRESSION)
    prepared = prepare(prepare_splits(data, cfg, seed=0), cfg, ValidationConfig(cv_folds=3))
    params = {"learning_rate": 0.3, "num_boost_round": 300, "early_stopping_rounds": 20}
    opts = FitOptions.from_config(cfg, family, params, seed=0, num_threads=1)
    cv = cross_validate(prepared, opts)
    X, y = prepared.cv_rows()
    models = [
        fit_model(prepared, opts, X[f.train], y[f.train], X[f.valid], y[f.valid]) for f in prepared.plan.folds
    ]
    own = [m.best_iteration_ for m in models]
    rounds = shared_round(models)
    assert cv.best_iterations == [rounds] * 3 and len(set(own)) > 1  # the folds alone disagreed
    for fold, model, value in zip(prepared.plan.folds, models, cv.scores, strict=True):
        at_shared = model.scores_at(X[fold.valid], rounds)
        assert value == pytest.approx(score(prepared, y[fold.valid], at_shared))
        np.testing.assert_allclose(cv.oof[fold.valid], at_shared)
    # Judged at their own best rounds the folds would have looked better: that optimism is what is removed.
    # (RMSE, and early stopping watched the squared error: each fold's own best round is its best RMSE.)
    flattering = [
        score(prepared, y[f.valid], predict_scores(m, Task.REGRESSION, X[f.valid]))
        for f, m in zip(prepared.plan.folds, models, strict=True)
    ]
    assert np.mean(cv.scores) >= np.mean(flattering) - 1e-12


def test_shared_round_pads_a_fold_that_stopped_early_and_knows_the_direction():
    from types import SimpleNamespace

    from pmls.ml.fitting import shared_round

    def model(curve, higher=False):
        return SimpleNamespace(valid_curve_=np.asarray(curve, dtype=float), curve_higher_is_better_=higher)

    # Fold 2 stopped after 3 rounds at 0.5: its last value stands for rounds 4-5, so round 4 wins on average.
    assert shared_round([model([0.9, 0.7, 0.6, 0.4, 0.45]), model([0.8, 0.6, 0.5])]) == 4
    assert shared_round([model([0.6, 0.8, 0.7], higher=True), model([0.5, 0.9, 0.6], higher=True)]) == 2
    assert (
        shared_round([model([0.9, 0.7]), SimpleNamespace(valid_curve_=None)]) is None
    )  # a family without one

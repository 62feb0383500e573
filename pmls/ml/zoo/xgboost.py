"""XGBoost (``hist``) behind the zoo contract; categorical codes go in as plain numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xgboost as xgb

from pmls.contracts import ModelType, Task
from pmls.ml.zoo.base import Callback, FitData, ZooModel, float_range, int_range, pop_loop_settings

HIGHER_IS_BETTER_METRICS = {"auc", "aucpr", "map", "ndcg", "pre"}
MODEL_FILE = "model.json"
VALID_NAME = "validation"
DEFAULT_ROUNDS = 1000
DEFAULT_EARLY_STOPPING = 50
DEFAULT_ETA = 0.1  # XGBoost's own 0.3 overfits small tables before early stopping can help
ROUND_KEYS = ("num_boost_round", "n_estimators", "num_rounds")
OBJECTIVES = {
    Task.BINARY: ("binary:logistic", "logloss"),
    Task.MULTICLASS: ("multi:softprob", "mlogloss"),
    Task.REGRESSION: ("reg:squarederror", "rmse"),
}

DEFAULT_SPACE = {
    "eta": float_range(0.01, 0.3, log=True),
    "max_depth": int_range(3, 10),
    "min_child_weight": float_range(0.1, 20.0, log=True),
    "subsample": float_range(0.5, 1.0),
    "colsample_bytree": float_range(0.5, 1.0),
    "reg_alpha": float_range(1e-8, 10.0, log=True),
    "reg_lambda": float_range(1e-8, 10.0, log=True),
}
KNOWN_PARAMS = frozenset({
    "eta", "learning_rate", "max_depth", "max_leaves", "min_child_weight", "gamma", "min_split_loss",
    "subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode", "reg_alpha", "alpha",
    "reg_lambda", "lambda", "max_bin", "grow_policy", "max_delta_step", "scale_pos_weight",
    "num_boost_round", "n_estimators", "early_stopping_rounds",
})  # fmt: skip


class _Progress(xgb.callback.TrainingCallback):
    """Reports each round to the zoo callbacks; their exceptions are never caught."""

    def __init__(self, callbacks: Sequence[Callback], total: int) -> None:
        super().__init__()
        self.callbacks = callbacks
        self.total = total

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        history = next(iter(evals_log.get(VALID_NAME, {}).values()), None)
        loss = float(history[-1]) if history else None
        for hook in self.callbacks:
            hook(epoch + 1, self.total, loss)
        return False  # never asks to stop; early stopping is its own callback


class XGBoostModel(ZooModel):
    model_type = ModelType.XGBOOST

    def fit(self, X, y, *, X_valid=None, y_valid=None, sample_weight=None, categorical=None, callbacks=()):
        data = self._fit_data(X, y, X_valid, y_valid, sample_weight, categorical)
        self.booster_, best = self._train(data, callbacks)
        gain = self.booster_.get_score(importance_type="total_gain")
        importances = np.array([gain.get(f"f{i}", 0.0) for i in range(data.X.shape[1])])
        self._finish_fit(data, importances, best)
        return self

    def _booster_params(self, data: FitData) -> dict:
        objective, metric = OBJECTIVES[self.task]
        full = {
            "objective": objective,
            "eval_metric": metric,
            "tree_method": "hist",
            "seed": self.seed,
            "nthread": self.num_threads,
            "verbosity": 0,
        }
        if self.task is Task.MULTICLASS:
            full["num_class"] = data.n_classes
        params = self.params or {}
        if "learning_rate" not in params:  # an alias: setting both would leave XGBoost to pick one
            full["eta"] = DEFAULT_ETA
        full.update(params)
        return full

    def _train(self, data: FitData, callbacks: Sequence[Callback]) -> tuple[xgb.Booster, int]:
        full = self._booster_params(data)
        rounds, patience = pop_loop_settings(full, ROUND_KEYS, DEFAULT_ROUNDS, DEFAULT_EARLY_STOPPING)
        dtrain = xgb.DMatrix(data.X, data.y, weight=data.weight, nthread=self.num_threads)
        hooks: list[xgb.callback.TrainingCallback] = [_Progress(callbacks, rounds)] if callbacks else []
        evals, recorded = [], {}
        if data.X_valid is not None:
            evals = [(xgb.DMatrix(data.X_valid, data.y_valid, nthread=self.num_threads), VALID_NAME)]
            hooks.append(xgb.callback.EarlyStopping(rounds=patience, data_name=VALID_NAME))
        booster = xgb.train(
            full, dtrain, rounds, evals=evals, evals_result=recorded, callbacks=hooks, verbose_eval=False
        )
        self.valid_curve_, self.curve_higher_is_better_ = None, False
        if data.X_valid is None:
            return booster, booster.num_boosted_rounds()
        metric, values = list(recorded[VALID_NAME].items())[-1]  # the metric early stopping watched
        self.valid_curve_ = np.asarray(values, dtype=np.float64)
        self.curve_higher_is_better_ = metric in HIGHER_IS_BETTER_METRICS
        # Serve the best round's trees only; keep every trained round (not saved) for ``scores_at``.
        best = booster.best_iteration + 1
        self._trained = booster
        return booster[:best], best

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self._scores(self.booster_, X, None)

    def scores_at(self, X: np.ndarray, rounds: int) -> np.ndarray:
        """Predictions of the first ``rounds`` trees, trained beyond the best round included (see ZooModel)."""
        booster = getattr(self, "_trained", None)
        booster = self.booster_ if booster is None else booster
        rounds = min(int(rounds), booster.num_boosted_rounds())
        return np.asarray(self._scores(booster, self._check_X(X), (0, rounds)), dtype=np.float64)

    def _scores(self, booster: xgb.Booster, X: np.ndarray, iterations: tuple[int, int] | None) -> np.ndarray:
        dmatrix = xgb.DMatrix(X, nthread=self.num_threads)
        raw = booster.predict(dmatrix, iteration_range=iterations) if iterations else booster.predict(dmatrix)
        if self.task is Task.BINARY:
            return np.column_stack([1.0 - raw, raw])
        return raw

    def _save_state(self, directory: Path) -> None:
        self.booster_.save_model(directory / MODEL_FILE)

    def _load_state(self, directory: Path, state: dict) -> None:
        self.booster_ = xgb.Booster(params={"nthread": self.num_threads}, model_file=directory / MODEL_FILE)

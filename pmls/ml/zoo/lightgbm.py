"""LightGBM behind the zoo contract: our booster defaults (``lightgbm_params``, which feature selection uses
too), early stopping, a per-round hook."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np

from pmls.contracts import ModelType, Task
from pmls.ml.zoo.base import Callback, FitData, ZooModel, float_range, int_range, pop_loop_settings

DEFAULT_ROUNDS = 1000
DEFAULT_EARLY_STOPPING = 50
OBJECTIVES = {Task.BINARY: "binary", Task.MULTICLASS: "multiclass", Task.REGRESSION: "regression"}
# Keys that steer the training loop rather than the booster; LightGBM would warn about them in params.
ROUND_KEYS = ("num_boost_round", "num_iterations", "n_estimators", "num_rounds", "num_trees")
HIGHER_IS_BETTER_METRICS = {"auc", "average_precision", "ndcg", "map", "auc_mu"}
MODEL_FILE = "model.txt"
VALID_NAME = "validation"

DEFAULT_SPACE = {
    "learning_rate": float_range(0.01, 0.3, log=True),
    "num_leaves": int_range(7, 255, log=True),
    "min_child_samples": int_range(2, 100, log=True),
    "feature_fraction": float_range(0.4, 1.0),
    "bagging_fraction": float_range(0.4, 1.0),
    "lambda_l1": float_range(1e-8, 10.0, log=True),
    "lambda_l2": float_range(1e-8, 10.0, log=True),
}
KNOWN_PARAMS = frozenset({
    "learning_rate", "num_leaves", "max_depth", "min_child_samples", "min_data_in_leaf",
    "min_sum_hessian_in_leaf", "feature_fraction", "colsample_bytree", "bagging_fraction", "subsample",
    "bagging_freq", "lambda_l1", "lambda_l2", "reg_alpha", "reg_lambda", "min_gain_to_split", "max_bin",
    "extra_trees", "path_smooth", "scale_pos_weight", "min_data_per_group", "cat_smooth", "cat_l2",
    "max_cat_to_onehot", "num_boost_round", "n_estimators", "early_stopping_rounds",
})  # fmt: skip


def lightgbm_params(task: Task, num_classes: int | None, params: dict | None = None, seed: int = 0) -> dict:
    """The full booster parameters: our defaults, then the caller's overrides."""
    full: dict[str, Any] = {
        "objective": OBJECTIVES[task],
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,  # deterministic=True wants a fixed histogram layout
    }
    if task is Task.MULTICLASS:
        full["num_class"] = int(num_classes or 0)
    full.update(params or {})
    if float(full.get("bagging_fraction", full.get("subsample", 1.0))) < 1.0:
        # LightGBM ignores a bagging fraction unless bagging_freq is set: without it the parameter is dead.
        full.setdefault("bagging_freq", full.get("subsample_freq", 1))
    return full


def _progress(callbacks: Sequence[Callback], total: int):
    def report(env: lgb.callback.CallbackEnv) -> None:
        loss = next((r[2] for r in env.evaluation_result_list or () if r[0] == VALID_NAME), None)
        # Never caught: a hook's exception (cancel, pruning) must stop lgb.train.
        for hook in callbacks:
            hook(env.iteration + 1, total, None if loss is None else float(loss))

    report.order = 10  # type: ignore[attr-defined]  # before early stopping (order 30), so the final round is reported too
    return report


class LightGBMModel(ZooModel):
    model_type = ModelType.LIGHTGBM

    def fit(self, X, y, *, X_valid=None, y_valid=None, sample_weight=None, categorical=None, callbacks=()):
        data = self._fit_data(X, y, X_valid, y_valid, sample_weight, categorical)
        self.booster_, recorded = self._train(data, callbacks)
        best = self.booster_.best_iteration or self.booster_.current_iteration()
        if recorded:  # the validation loss per round, as early stopping watched it (the first metric)
            metric, values = next(iter(recorded.items()))
            self.valid_curve_ = np.asarray(values, dtype=np.float64)
            self.curve_higher_is_better_ = metric in HIGHER_IS_BETTER_METRICS
        self._finish_fit(data, self.booster_.feature_importance(importance_type="gain"), best)
        return self

    def _booster_params(self, data: FitData) -> dict:
        params = {"num_threads": self.num_threads, **(self.params or {})}
        if data.X_valid is not None:
            params.setdefault("first_metric_only", True)  # stop on the objective's own loss
        return lightgbm_params(self.task, data.n_classes, params, self.seed)

    def _train(self, data: FitData, callbacks: Sequence[Callback]) -> tuple[lgb.Booster, dict]:
        full = self._booster_params(data)
        rounds, patience = pop_loop_settings(full, ROUND_KEYS, DEFAULT_ROUNDS, DEFAULT_EARLY_STOPPING)
        cats: list[int] | Literal["auto"] = list(data.categorical) or "auto"
        train_set = lgb.Dataset(data.X, data.y, weight=data.weight, categorical_feature=cats)
        hooks: list[Callable] = []
        valid_sets: list[lgb.Dataset] = []
        if data.X_valid is not None:
            valid_sets = [
                lgb.Dataset(data.X_valid, data.y_valid, reference=train_set, categorical_feature=cats)
            ]
            hooks.append(lgb.early_stopping(patience, verbose=False))
        if callbacks:
            hooks.append(_progress(callbacks, rounds))
        names = [VALID_NAME] if valid_sets else None
        recorded: dict = {}
        if valid_sets:
            hooks.append(lgb.record_evaluation(recorded))
        booster = lgb.train(
            full, train_set, rounds, valid_sets=valid_sets, valid_names=names, callbacks=hooks
        )
        return booster, recorded.get(VALID_NAME, {})

    def scores_at(self, X: np.ndarray, rounds: int) -> np.ndarray:
        """Predictions (values, or class probabilities) of the first ``rounds`` trees, trained beyond the best
        round included, so that every cross-validation fold can be judged at one shared round."""
        raw = self.booster_.predict(self._check_X(X), num_iteration=int(rounds), num_threads=self.num_threads)
        if self.task is Task.BINARY:
            return np.column_stack([1.0 - raw, raw])
        return np.asarray(raw, dtype=np.float64)

    def _raw(self, X: np.ndarray) -> np.ndarray:
        raw = self.booster_.predict(X, num_threads=self.num_threads)  # best iteration when early-stopped
        if self.task is Task.BINARY:
            return np.column_stack([1.0 - raw, raw])
        return raw

    def _save_state(self, directory: Path) -> None:
        # Saves the best iteration's trees only, so the loaded booster predicts exactly the same.
        self.booster_.save_model(directory / MODEL_FILE)

    def _load_state(self, directory: Path, state: dict) -> None:
        self.booster_ = lgb.Booster(model_file=directory / MODEL_FILE)

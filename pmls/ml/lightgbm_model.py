"""LightGBM training with early stopping and a per-round progress hook."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np

from pmls.contracts import Task

DEFAULT_ROUNDS = 1000
DEFAULT_EARLY_STOPPING = 50
OBJECTIVES = {Task.BINARY: "binary", Task.MULTICLASS: "multiclass", Task.REGRESSION: "regression"}
# Keys that steer the training loop rather than the booster; LightGBM would warn about them in params.
ROUND_KEYS = ("num_boost_round", "num_iterations", "n_estimators", "num_rounds", "num_trees")


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
    return full


def _loop_settings(full: dict) -> tuple[int, int]:
    rounds = DEFAULT_ROUNDS
    for key in ROUND_KEYS:
        if key in full:
            rounds = int(full.pop(key))
    return rounds, int(full.pop("early_stopping_rounds", DEFAULT_EARLY_STOPPING))


def _progress_callback(callbacks: Sequence[Callable[[int, int], None]], total: int) -> Callable:
    def report(env: lgb.callback.CallbackEnv) -> None:
        # Whatever a hook raises (e.g. the activity's cancellation) propagates out of lgb.train.
        for hook in callbacks:
            hook(env.iteration + 1, total)

    report.order = 10  # before early stopping (order 30), so the final round is reported too
    return report


def train_lightgbm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    task: Task,
    num_classes: int | None,
    categorical_features: list[int],
    params: dict | None = None,
    seed: int = 0,
    callbacks: Sequence[Callable[[int, int], None]] = (),
) -> lgb.Booster:
    """Train up to 1000 rounds, stopping when the validation loss has not improved for 50."""
    full = lightgbm_params(task, num_classes, params, seed)
    rounds, patience = _loop_settings(full)
    categorical = list(categorical_features) or "auto"
    train_set = lgb.Dataset(X_train, y_train, categorical_feature=categorical, free_raw_data=False)
    valid_set = lgb.Dataset(X_valid, y_valid, reference=train_set, categorical_feature=categorical)
    hooks = [lgb.early_stopping(patience, verbose=False)]
    if callbacks:
        hooks.append(_progress_callback(callbacks, rounds))
    return lgb.train(
        full,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        valid_names=["validation"],
        callbacks=hooks,
    )

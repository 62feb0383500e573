"""LightGBM booster parameters shared by the zoo's LightGBM family."""

from __future__ import annotations

from typing import Any

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
    if float(full.get("bagging_fraction", full.get("subsample", 1.0))) < 1.0:
        # LightGBM ignores a bagging fraction unless bagging_freq is set: without it the parameter is dead.
        full.setdefault("bagging_freq", full.get("subsample_freq", 1))
    return full

"""Hyperparameter names each family accepts in ``search_space`` (a typo is a 422, not a silent no-op)."""

from __future__ import annotations

from typing import Any

from pmls.contracts.enums import ModelType
from pmls.contracts.models import ParameterRange

KNOWN_PARAMETERS: dict[ModelType, frozenset[str]] = {
    ModelType.LIGHTGBM: frozenset({
        "learning_rate", "num_leaves", "max_depth", "min_child_samples", "min_data_in_leaf",
        "min_sum_hessian_in_leaf", "feature_fraction", "colsample_bytree", "bagging_fraction", "subsample",
        "bagging_freq", "lambda_l1", "lambda_l2", "reg_alpha", "reg_lambda", "min_gain_to_split", "max_bin",
        "extra_trees", "path_smooth", "num_boost_round", "n_estimators", "early_stopping_rounds",
        "scale_pos_weight", "min_data_per_group", "cat_smooth", "cat_l2",
    }),
}


def unknown_parameters(model_type: ModelType, names: list[str]) -> list[str]:
    known = KNOWN_PARAMETERS.get(model_type)
    return [] if known is None else sorted(n for n in names if n not in known)


def fixed_parameters(space: dict[str, ParameterRange]) -> dict[str, Any]:
    """The single-point ranges (``low == high`` or one choice): parameters the user fixed."""
    fixed: dict[str, Any] = {}
    for name, rng in space.items():
        if rng.type == "categorical" and rng.choices and len(rng.choices) == 1:
            fixed[name] = rng.choices[0]
        elif rng.type != "categorical" and rng.low is not None and rng.low == rng.high:
            fixed[name] = int(rng.low) if rng.type == "int" else float(rng.low)
    return fixed

"""Hyperparameter names each family accepts in ``search_space`` (a typo is a 422, not a silent no-op)."""

from __future__ import annotations

from typing import Any

from pmls.contracts.enums import ModelType
from pmls.contracts.models import ParameterRange

# Mirrors pmls.ml.zoo's known_params (a test keeps them equal): contracts cannot import the ML stack.
KNOWN_PARAMETERS: dict[ModelType, frozenset[str]] = {
    ModelType.LIGHTGBM: frozenset(
        {
            "bagging_fraction",
            "bagging_freq",
            "cat_l2",
            "cat_smooth",
            "colsample_bytree",
            "early_stopping_rounds",
            "extra_trees",
            "feature_fraction",
            "lambda_l1",
            "lambda_l2",
            "learning_rate",
            "max_bin",
            "max_cat_to_onehot",
            "max_depth",
            "min_child_samples",
            "min_data_in_leaf",
            "min_data_per_group",
            "min_gain_to_split",
            "min_sum_hessian_in_leaf",
            "n_estimators",
            "num_boost_round",
            "num_leaves",
            "path_smooth",
            "reg_alpha",
            "reg_lambda",
            "scale_pos_weight",
            "subsample",
        }
    ),
    ModelType.XGBOOST: frozenset(
        {
            "alpha",
            "colsample_bylevel",
            "colsample_bynode",
            "colsample_bytree",
            "early_stopping_rounds",
            "eta",
            "gamma",
            "grow_policy",
            "lambda",
            "learning_rate",
            "max_bin",
            "max_delta_step",
            "max_depth",
            "max_leaves",
            "min_child_weight",
            "min_split_loss",
            "n_estimators",
            "num_boost_round",
            "reg_alpha",
            "reg_lambda",
            "scale_pos_weight",
            "subsample",
        }
    ),
    ModelType.RANDOM_FOREST: frozenset(
        {
            "bootstrap",
            "ccp_alpha",
            "criterion",
            "max_depth",
            "max_features",
            "max_leaf_nodes",
            "max_samples",
            "min_impurity_decrease",
            "min_samples_leaf",
            "min_samples_split",
            "n_estimators",
        }
    ),
    ModelType.NEURAL_NETWORK: frozenset(
        {
            "batch_size",
            "dropout",
            "early_stopping_rounds",
            "hidden_size",
            "learning_rate",
            "max_epochs",
            "num_layers",
            "weight_decay",
        }
    ),
    ModelType.LSTM: frozenset(
        {
            "batch_size",
            "dropout",
            "early_stopping_rounds",
            "hidden_size",
            "learning_rate",
            "max_epochs",
            "num_layers",
            "weight_decay",
        }
    ),
}


def unknown_parameters(model_type: ModelType, names: list[str]) -> list[str]:
    if model_type is ModelType.ENSEMBLE:
        return sorted(names)  # each member family searches its own default space
    known = KNOWN_PARAMETERS.get(model_type)
    return [] if known is None else sorted(n for n in names if n not in known)


def ensemble_families(timestamp_column: str | None, entity_column: str | None) -> list[ModelType]:
    """ENSEMBLE's portfolio: the tabular families, and the LSTM when the rows are series of entities."""
    families = [ModelType.LIGHTGBM, ModelType.XGBOOST, ModelType.RANDOM_FOREST, ModelType.NEURAL_NETWORK]
    if timestamp_column and entity_column:
        families.append(ModelType.LSTM)
    return families


def fixed_parameters(space: dict[str, ParameterRange]) -> dict[str, Any]:
    """The single-point ranges (``low == high`` or one choice): parameters the user fixed."""
    fixed: dict[str, Any] = {}
    for name, rng in space.items():
        if rng.type == "categorical" and rng.choices and len(rng.choices) == 1:
            fixed[name] = rng.choices[0]
        elif rng.type != "categorical" and rng.low is not None and rng.low == rng.high:
            fixed[name] = int(rng.low) if rng.type == "int" else float(rng.low)
    return fixed

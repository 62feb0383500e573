"""Search spaces, starting portfolios, samplers and pruners: the Optuna side of tuning, pure.

A family's default space (``pmls.ml.zoo``) is narrowed, widened or extended by the request's
``search_space``; a single-point range fixes a parameter. Each study starts from a small portfolio of
configurations known to be strong for the family (as AutoGluon's and FLAML's zero-shot defaults do),
so that short budgets already give good models, before the sampler takes over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from pmls.contracts import ModelType, ParameterRange
from pmls.contracts.params import fixed_parameters
from pmls.ml.errors import DataError

# Strong starting points per family (tabular defaults distilled from published AutoML portfolios).
PORTFOLIO: dict[ModelType, list[dict[str, Any]]] = {
    ModelType.LIGHTGBM: [
        {
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_child_samples": 20,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "lambda_l1": 1e-8,
            "lambda_l2": 1e-8,
        },
        {
            "learning_rate": 0.03,
            "num_leaves": 128,
            "min_child_samples": 5,
            "feature_fraction": 0.7,
            "bagging_fraction": 1.0,
            "lambda_l1": 1e-8,
            "lambda_l2": 1.0,
        },
        {
            "learning_rate": 0.1,
            "num_leaves": 15,
            "min_child_samples": 50,
            "feature_fraction": 0.6,
            "bagging_fraction": 0.8,
            "lambda_l1": 0.1,
            "lambda_l2": 5.0,
        },
        # Slow and regularised: small learning rate, many rounds (the regime that wins given the rounds).
        {
            "learning_rate": 0.015,
            "num_leaves": 24,
            "min_child_samples": 10,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.7,
            "lambda_l1": 1e-8,
            "lambda_l2": 3.0,
        },
    ],
    ModelType.XGBOOST: [
        {
            "eta": 0.05,
            "max_depth": 6,
            "min_child_weight": 1.0,
            "subsample": 0.9,
            "colsample_bytree": 0.9,
            "reg_alpha": 1e-8,
            "reg_lambda": 1.0,
        },
        {
            "eta": 0.1,
            "max_depth": 4,
            "min_child_weight": 5.0,
            "subsample": 0.8,
            "colsample_bytree": 0.7,
            "reg_alpha": 0.1,
            "reg_lambda": 5.0,
        },
    ],
    ModelType.RANDOM_FOREST: [
        {"n_estimators": 300, "max_depth": None, "min_samples_leaf": 1, "max_features": "sqrt"},
        {"n_estimators": 300, "max_depth": 12, "min_samples_leaf": 5, "max_features": 0.5},
    ],
    ModelType.NEURAL_NETWORK: [
        {
            "hidden_size": 128,
            "num_layers": 2,
            "dropout": 0.1,
            "learning_rate": 1e-3,
            "weight_decay": 1e-5,
            "batch_size": 256,
        },
        {
            "hidden_size": 256,
            "num_layers": 3,
            "dropout": 0.2,
            "learning_rate": 3e-4,
            "weight_decay": 1e-4,
            "batch_size": 128,
        },
    ],
    ModelType.LSTM: [
        {"hidden_size": 64, "num_layers": 1, "dropout": 0.0, "learning_rate": 1e-3, "batch_size": 128},
        {"hidden_size": 128, "num_layers": 2, "dropout": 0.2, "learning_rate": 5e-4, "batch_size": 256},
    ],
}


def merge_space(
    model_type: ModelType, user: dict[str, ParameterRange]
) -> tuple[dict[str, ParameterRange], dict]:
    """(ranges to search, fixed parameters): the family's defaults overridden and extended by the user's."""
    from pmls.ml.zoo import get_entry

    entry = get_entry(model_type)
    unknown = sorted(set(user) - set(entry.known_params))
    if unknown:
        raise DataError(
            f"hyperparameter_config.search_space.{unknown[0]}",
            f"{model_type.value} has no parameter {', '.join(unknown)}",
        )
    merged = {**entry.default_space, **user}
    fixed = fixed_parameters(merged)
    return {name: rng for name, rng in merged.items() if name not in fixed}, fixed


def distribution(rng: ParameterRange) -> BaseDistribution:
    if rng.type == "categorical":
        return CategoricalDistribution(list(rng.choices))
    if rng.type == "int":
        step = int(rng.step or 1)
        return IntDistribution(int(rng.low), int(rng.high), log=rng.log and step == 1, step=step)
    return FloatDistribution(float(rng.low), float(rng.high), log=rng.log and rng.step is None, step=rng.step)


def distributions(space: dict[str, ParameterRange]) -> dict[str, BaseDistribution]:
    return {name: distribution(rng) for name, rng in space.items()}


def portfolio(model_type: ModelType, space: dict[str, ParameterRange]) -> list[dict[str, Any]]:
    """The family's portfolio, each configuration clipped into the (possibly narrowed) space."""
    out = []
    for config in PORTFOLIO.get(model_type, []):
        params = {name: _clip(config[name], rng) for name, rng in space.items() if name in config}
        if params and params not in out:
            out.append(params)
    return out


def _clip(value: Any, rng: ParameterRange) -> Any:
    if rng.type == "categorical":
        return value if value in rng.choices else rng.choices[0]
    clipped = min(max(value, rng.low), rng.high)
    return int(round(clipped)) if rng.type == "int" else float(clipped)


def grid(space: dict[str, ParameterRange], points: int = 5) -> dict[str, list]:
    """A finite grid for GridSampler: categorical choices, int steps, or a few (log-)spaced floats."""
    out = {}
    for name, rng in space.items():
        if rng.type == "categorical":
            out[name] = list(rng.choices)
        elif rng.type == "int":
            values = np.unique(np.linspace(rng.low, rng.high, points).round().astype(int))
            out[name] = [int(v) for v in values]
        else:
            spaced = (
                np.geomspace(rng.low, rng.high, points) if rng.log else np.linspace(rng.low, rng.high, points)
            )
            out[name] = [float(v) for v in spaced]
    return out


def make_sampler(method: str, seed: int, space: dict[str, ParameterRange]) -> optuna.samplers.BaseSampler:
    """Samplers are not stored with the study: rebuild one per ask, seeded from the trial count."""
    if method == "tpe":
        # constant_liar: a trial still running in another slot counts as a poor result, so that parallel slots
        # spread out instead of sampling next to each other (one slot never has a running trial when it asks).
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True)
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if method == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if method == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if method == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if method == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    raise DataError("hyperparameter_config.optimization_method", f"{method!r} does not search")


def make_pruner(name: str, folds: int) -> optuna.pruners.BasePruner:
    """Pruning works on cumulative CV fold scores: step k = the mean over the first k+1 folds."""
    if name == "median":
        # Judged after two folds and ten finished trials: on one fold, slow learners (small learning rates,
        # many rounds) look worse than they end, and the first trials say little about the median.
        return optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=1)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(folds, 1))
    return optuna.pruners.NopPruner()


def grid_size(space: dict[str, ParameterRange]) -> int:
    return int(np.prod([len(v) for v in grid(space).values()])) if space else 1

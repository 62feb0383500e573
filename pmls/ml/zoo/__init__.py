"""The model zoo: every family behind one contract (``ZooModel``), listed in ``REGISTRY``.

Tests parametrise over the registry, tuning reads ``default_space`` / ``known_params`` from it, and
``load_model`` finds a saved model's family from its meta.json.
"""

from __future__ import annotations

from pathlib import Path

from pmls.contracts import ModelType
from pmls.ml.errors import DataError
from pmls.ml.zoo import forest, lightgbm, lstm, mlp, xgboost
from pmls.ml.zoo.base import Callback, ZooEntry, ZooModel, read_meta

REGISTRY: dict[ModelType, ZooEntry] = {
    entry.model_type: entry
    for entry in (
        ZooEntry(ModelType.LIGHTGBM, lightgbm.LightGBMModel, lightgbm.DEFAULT_SPACE, lightgbm.KNOWN_PARAMS),
        ZooEntry(ModelType.XGBOOST, xgboost.XGBoostModel, xgboost.DEFAULT_SPACE, xgboost.KNOWN_PARAMS),
        ZooEntry(
            ModelType.RANDOM_FOREST, forest.RandomForestModel, forest.DEFAULT_SPACE, forest.KNOWN_PARAMS
        ),
        ZooEntry(ModelType.NEURAL_NETWORK, mlp.MLPModel, mlp.DEFAULT_SPACE, mlp.KNOWN_PARAMS),
        ZooEntry(ModelType.LSTM, lstm.LSTMModel, lstm.DEFAULT_SPACE, lstm.KNOWN_PARAMS, sequential=True),
    )
}


def get_entry(model_type: ModelType | str) -> ZooEntry:
    """The registry entry; ENSEMBLE is built from entries, so it has none."""
    try:
        return REGISTRY[ModelType(model_type)]
    except (KeyError, ValueError):
        known = ", ".join(sorted(REGISTRY))
        raise DataError(
            "model_type", f"{model_type!r} is not a single model family; use one of {known}"
        ) from None


def load_model(directory: Path) -> ZooModel:
    """A saved model of any family (the family is read from its meta.json)."""
    return get_entry(read_meta(directory)["model_type"]).cls.load(directory)


__all__ = ["REGISTRY", "Callback", "ZooEntry", "ZooModel", "get_entry", "load_model"]

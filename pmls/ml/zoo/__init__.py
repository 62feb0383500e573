"""The model zoo: every family behind one contract (``ZooModel``), listed in ``REGISTRY``.

Tests parametrise over the registry, tuning reads ``default_space`` / ``known_params`` from it, and
``load_model`` finds a saved model's family from its meta.json.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from pmls.contracts import ModelType
from pmls.ml.errors import DataError
from pmls.ml.zoo.base import Callback, ZooEntry, ZooModel, read_meta

# Family -> (module, class). Loading a saved model imports only its own family, so a served LightGBM
# model needs neither torch nor xgboost where it runs.
FAMILIES = {
    ModelType.LIGHTGBM: ("lightgbm", "LightGBMModel"),
    ModelType.XGBOOST: ("xgboost", "XGBoostModel"),
    ModelType.RANDOM_FOREST: ("forest", "RandomForestModel"),
    ModelType.NEURAL_NETWORK: ("mlp", "MLPModel"),
    ModelType.LSTM: ("lstm", "LSTMModel"),
}


def _module(model_type: ModelType):
    return importlib.import_module(f"pmls.ml.zoo.{FAMILIES[model_type][0]}")


@cache
def registry() -> dict[ModelType, ZooEntry]:
    entries = {}
    for model_type, (_, cls_name) in FAMILIES.items():
        module = _module(model_type)
        entries[model_type] = ZooEntry(
            model_type,
            getattr(module, cls_name),
            module.DEFAULT_SPACE,
            module.KNOWN_PARAMS,
            sequential=model_type is ModelType.LSTM,
        )
    return entries


def __getattr__(name: str):
    if name == "REGISTRY":
        return registry()
    raise AttributeError(name)


def get_entry(model_type: ModelType | str) -> ZooEntry:
    """The registry entry; ENSEMBLE is built from entries, so it has none."""
    try:
        return registry()[ModelType(model_type)]
    except (KeyError, ValueError):
        known = ", ".join(sorted(FAMILIES))
        raise DataError(
            "model_type", f"{model_type!r} is not a single model family; use one of {known}"
        ) from None


def load_model(directory: Path) -> ZooModel:
    """A saved model of any family (the family is read from its meta.json; only it is imported)."""
    model_type = ModelType(read_meta(directory)["model_type"])
    return getattr(_module(model_type), FAMILIES[model_type][1]).load(directory)


__all__ = ["FAMILIES", "REGISTRY", "Callback", "ZooEntry", "ZooModel", "get_entry", "load_model", "registry"]

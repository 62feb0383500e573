"""The one contract every model family implements (scikit-learn style), and the registry record.

``__init__`` only stores its arguments; ``fit`` validates, trains, sets trailing-underscore attributes
and returns ``self``; ``predict`` / ``predict_proba`` refuse an unfitted model. Families implement
``fit`` plus four hooks: ``_raw`` (probabilities or values), ``_state`` (JSON extras for meta.json),
``_save_state`` and ``_load_state`` (their own safe files next to meta.json).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.exceptions import NotFittedError

from pmls.contracts import ModelType, ParameterRange, Task
from pmls.ml.errors import DataError

FORMAT_VERSION = 1
META_FILE = "meta.json"

# cb(iteration, total, validation_loss_or_None), after every boosting round / epoch / chunk of trees.
Callback = Callable[[int, int, float | None], None]


@dataclass
class FitData:
    """Validated training inputs, as the families consume them."""

    X: np.ndarray
    y: np.ndarray
    X_valid: np.ndarray | None
    y_valid: np.ndarray | None
    weight: np.ndarray | None
    categorical: dict[int, int] = field(default_factory=dict)
    n_classes: int | None = None


class ZooModel:
    """Base class: one model family behind the fit / predict / save / load contract."""

    model_type: ClassVar[ModelType]
    sequential: ClassVar[bool] = False  # True: X is (n, seq_len, features) instead of (n, features)
    # Boosting families record the validation loss of every round they trained (``scores_at`` predicts at any
    # of them), so cross-validation can judge all folds at one shared round; the others leave it None.
    valid_curve_: np.ndarray | None = None
    curve_higher_is_better_: bool = False

    def __init__(
        self,
        task: Task,
        num_classes: int | None = None,
        params: dict | None = None,
        seed: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.task = task
        self.num_classes = num_classes
        self.params = params
        self.seed = seed
        self.num_threads = num_threads

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        X_valid: np.ndarray | None = None,
        y_valid: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        categorical: dict[int, int] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> ZooModel:
        raise NotImplementedError

    # --- prediction ---

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class index (int64) for classification, value (float64) for regression."""
        raw = self._raw(self._check_X(X))
        if self.task is Task.REGRESSION:
            return np.asarray(raw, dtype=np.float64)
        return np.asarray(raw).argmax(axis=1).astype(np.int64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """n x k class probabilities (k = 2 for binary)."""
        if self.task is Task.REGRESSION:
            raise DataError(
                "task", f"predict_proba needs a classifier; this {self.model_type} is a regressor"
            )
        return np.asarray(self._raw(self._check_X(X)), dtype=np.float64)

    def scores_at(self, X: np.ndarray, rounds: int) -> np.ndarray:
        """Predictions of the model as it was after ``rounds`` rounds (families with a ``valid_curve_``)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict at a given round")

    def _check_fitted(self) -> None:
        if "feature_importances_" not in vars(self):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _check_X(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        ndim = 3 if self.sequential else 2
        if X.ndim != ndim or X.shape[-1] != self.n_features_in_:
            raise DataError(
                "input", f"expected a {ndim}-D array with {self.n_features_in_} features, got shape {X.shape}"
            )
        return X

    # --- fitting helpers for the families ---

    def _fit_data(self, X, y, X_valid, y_valid, sample_weight, categorical) -> FitData:
        """Check shapes, labels, weights and categorical columns; the families trust the result."""
        ndim = 3 if self.sequential else 2
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != ndim or len(X) == 0:
            raise DataError("input", f"expected a non-empty {ndim}-D array, got shape {X.shape}")
        n_classes = self._n_classes(y)
        y = self._check_y(y, len(X), n_classes)
        if (X_valid is None) != (y_valid is None):
            raise DataError("input", "give both X_valid and y_valid, or neither")
        if X_valid is not None:
            X_valid = np.asarray(X_valid, dtype=np.float32)
            if X_valid.ndim != ndim or X_valid.shape[1:] != X.shape[1:]:
                raise DataError("input", f"X_valid has shape {X_valid.shape}, X has {X.shape}")
            y_valid = self._check_y(y_valid, len(X_valid), n_classes)
        weight = _check_weight(sample_weight, len(X))
        cats = _check_categorical(categorical, X.shape[-1])
        return FitData(X, y, X_valid, y_valid, weight, cats, n_classes)

    def _n_classes(self, y) -> int | None:
        if self.task is Task.REGRESSION:
            return None
        if self.num_classes is not None:
            return int(self.num_classes)
        return 2 if self.task is Task.BINARY else int(np.max(y)) + 1

    def _check_y(self, y, n: int, n_classes: int | None) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != (n,):
            raise DataError("input", f"expected {n} target values, got shape {y.shape}")
        if n_classes is None:
            y = y.astype(np.float64)
            if not np.isfinite(y).all():
                raise DataError("input", "the regression target has missing or infinite values")
            return y
        if not np.all((y >= 0) & (y < n_classes) & (y == np.round(y))):
            raise DataError("input", f"class indices must be integers in 0..{n_classes - 1}")
        return y.astype(np.int64)

    def _finish_fit(self, data: FitData, importances: np.ndarray | None, best_iteration: int | None) -> None:
        """Set the fitted attributes every family shares (feature_importances_ marks 'fitted')."""
        self.n_features_in_ = int(data.X.shape[-1])
        self.n_classes_ = data.n_classes
        self.categorical_ = data.categorical
        self.best_iteration_ = None if best_iteration is None else int(best_iteration)
        self.feature_importances_ = None if importances is None else normalise(importances)

    # --- persistence ---

    def save(self, directory: Path) -> None:
        """Write the family's own safe files, then meta.json (last, so its presence means complete)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_state(directory)
        importances = self.feature_importances_
        meta = {
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type.value,
            "init": {
                "task": self.task.value,
                "num_classes": self.num_classes,
                "params": self.params,
                "seed": self.seed,
                "num_threads": self.num_threads,
            },
            "fitted": {
                "n_features_in": self.n_features_in_,
                "n_classes": self.n_classes_,
                "categorical": {str(k): v for k, v in self.categorical_.items()},
                "best_iteration": self.best_iteration_,
                "feature_importances": None if importances is None else importances.tolist(),
            },
            "state": self._state(),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))

    @classmethod
    def load(cls, directory: Path) -> ZooModel:
        if cls is ZooModel:
            raise TypeError("ZooModel.load needs a family; pmls.ml.zoo.load_model reads it from meta.json")
        meta = read_meta(directory)
        if meta["model_type"] != cls.model_type.value:
            raise DataError("model", f"{directory} holds a {meta['model_type']} model, not {cls.model_type}")
        init, fitted = meta["init"], meta["fitted"]
        model = cls(
            Task(init["task"]), init["num_classes"], init["params"], init["seed"], init["num_threads"]
        )
        model.n_features_in_ = fitted["n_features_in"]
        model.n_classes_ = fitted["n_classes"]
        model.categorical_ = {int(k): int(v) for k, v in fitted["categorical"].items()}
        model.best_iteration_ = fitted["best_iteration"]
        model._load_state(Path(directory), meta["state"])
        importances = fitted["feature_importances"]
        model.feature_importances_ = None if importances is None else np.asarray(importances)
        return model

    # --- hooks ---

    def _raw(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict:
        return {}

    def _save_state(self, directory: Path) -> None:
        raise NotImplementedError

    def _load_state(self, directory: Path, state: dict) -> None:
        raise NotImplementedError


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise DataError("model", f"{directory} holds no saved model ({META_FILE} is missing)")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError("model", f"unsupported model format {meta.get('format_version')!r}")
    return meta


def normalise(values: np.ndarray) -> np.ndarray:
    """Shares summing to 1; all zeros stay zeros (a model that never split has no importances)."""
    values = np.asarray(values, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


def settings(params: dict | None, defaults: dict[str, Any], family: ModelType) -> dict[str, Any]:
    """Defaults overridden by params; an unknown name is an error, not a silent no-op."""
    unknown = sorted(set(params or {}) - set(defaults))
    if unknown:
        raise DataError("params", f"unknown parameter(s) {unknown} for {family}; known: {sorted(defaults)}")
    return {**defaults, **(params or {})}


def pop_loop_settings(full: dict, round_keys: Sequence[str], rounds: int, patience: int) -> tuple[int, int]:
    """Remove the training-loop keys from booster params: (rounds, early-stopping patience)."""
    for key in round_keys:
        if key in full:
            rounds = int(full.pop(key))
    return rounds, int(full.pop("early_stopping_rounds", patience))


def float_range(low: float, high: float, log: bool = False) -> ParameterRange:
    return ParameterRange(type="float", low=low, high=high, log=log)


def int_range(low: int, high: int, log: bool = False) -> ParameterRange:
    return ParameterRange(type="int", low=low, high=high, log=log)


def choice(*choices: Any) -> ParameterRange:
    return ParameterRange(type="categorical", choices=list(choices))


@dataclass(frozen=True)
class ZooEntry:
    """One family in the registry: its class, default search space and accepted parameter names."""

    model_type: ModelType
    cls: type[ZooModel]
    default_space: dict[str, ParameterRange]
    known_params: frozenset[str]
    sequential: bool = False

    def build(
        self,
        task: Task,
        num_classes: int | None = None,
        params: dict | None = None,
        seed: int = 0,
        num_threads: int = 1,
    ) -> ZooModel:
        return self.cls(task, num_classes, params, seed, num_threads)


def _check_weight(sample_weight, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    weight = np.asarray(sample_weight, dtype=np.float64)
    if weight.shape != (n,) or not np.isfinite(weight).all() or (weight < 0).any() or weight.sum() <= 0:
        raise DataError("sample_weight", f"need {n} finite, non-negative weights with a positive sum")
    return weight


def _check_categorical(categorical: dict[int, int] | None, n_features: int) -> dict[int, int]:
    cats = {int(k): int(v) for k, v in (categorical or {}).items()}
    bad = [k for k, card in cats.items() if not 0 <= k < n_features or card < 1]
    if bad:
        raise DataError(
            "categorical", f"columns {bad} are out of range 0..{n_features - 1} or have no categories"
        )
    return dict(sorted(cats.items()))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

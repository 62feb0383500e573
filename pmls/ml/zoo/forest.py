"""scikit-learn random forests behind the zoo contract.

Trees grow in chunks (``warm_start``) so progress, cancellation and pruning land between chunks;
with an int ``random_state`` sklearn draws the same tree seeds as one big fit, so chunking does not
change the model. Forests split on NaN natively (sklearn >= 1.4), so missing values need no imputing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from pmls.contracts import ModelType, Task
from pmls.ml.zoo.base import FitData, ZooModel, choice, int_range, settings

MODEL_FILE = "model.skops"
# Everything a saved forest holds beyond numpy and builtins; skops refuses any other type on load.
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
CHUNKS = 10
PROBA_EPS = 1e-15

DEFAULTS: dict = {
    "n_estimators": 200,
    "max_depth": None,
    "min_samples_split": 2,
    "min_samples_leaf": 1,
    "max_features": "sqrt",
    "max_leaf_nodes": None,
    "min_impurity_decrease": 0.0,
    "bootstrap": True,
    "max_samples": None,
    "criterion": None,  # None: sklearn's default for the task (gini / squared_error)
    "ccp_alpha": 0.0,
}
DEFAULT_SPACE = {
    "n_estimators": int_range(100, 500),
    "max_depth": choice(None, 3, 5, 8, 12, 20, 30),
    "min_samples_leaf": int_range(1, 20),
    "max_features": choice("sqrt", "log2", 0.5, 1.0),
}
KNOWN_PARAMS = frozenset(DEFAULTS)


class RandomForestModel(ZooModel):
    model_type = ModelType.RANDOM_FOREST

    def fit(self, X, y, *, X_valid=None, y_valid=None, sample_weight=None, categorical=None, callbacks=()):
        data = self._fit_data(X, y, X_valid, y_valid, sample_weight, categorical)
        self.forest_ = self._estimator()
        total = self.forest_.n_estimators
        chunks = min(CHUNKS, total)
        for chunk in range(1, chunks + 1):
            self.forest_.set_params(n_estimators=round(total * chunk / chunks))
            self.forest_.fit(data.X, data.y, sample_weight=data.weight)
            loss = self._valid_loss(data) if callbacks and data.X_valid is not None else None
            for hook in callbacks:  # never caught: cancellation stops between chunks
                hook(chunk, chunks, loss)
        self._finish_fit(data, self.forest_.feature_importances_, None)
        return self

    def _estimator(self) -> RandomForestClassifier | RandomForestRegressor:
        kwargs = settings(self.params, DEFAULTS, self.model_type)
        if kwargs["criterion"] is None:
            del kwargs["criterion"]
        kwargs.update(random_state=self.seed, n_jobs=self.num_threads, warm_start=True)
        kwargs["n_estimators"] = max(1, int(kwargs["n_estimators"]))
        if self.task is Task.REGRESSION:
            return RandomForestRegressor(**kwargs)
        return RandomForestClassifier(**kwargs)

    def _valid_loss(self, data: FitData) -> float:
        """Log loss (classification) or MSE (regression) on the validation rows, for pruning."""
        X, y = data.X_valid, data.y_valid
        assert X is not None and y is not None
        raw = self._raw_forest(X, data.n_classes)
        if self.task is Task.REGRESSION:
            return float(np.mean((raw - y) ** 2))
        picked = raw[np.arange(len(raw)), y]
        return float(-np.mean(np.log(np.clip(picked, PROBA_EPS, 1.0))))

    def _raw_forest(self, X: np.ndarray, n_classes: int | None) -> np.ndarray:
        # Threads pay off for big batches only; a single served row would wait ~30 ms for joblib's dispatch.
        self.forest_.set_params(n_jobs=self.num_threads if len(X) >= 1000 else 1)
        if self.task is Task.REGRESSION:
            return self.forest_.predict(X)
        # A class absent from the training rows has no column in sklearn's output: put it back as 0.
        proba = np.zeros((len(X), int(n_classes or 0)))
        proba[:, self.forest_.classes_.astype(int)] = self.forest_.predict_proba(X)
        return proba

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self._raw_forest(X, self.n_classes_)

    def _save_state(self, directory: Path) -> None:
        sio.dump(self.forest_, directory / MODEL_FILE)

    def _load_state(self, directory: Path, state: dict) -> None:
        self.forest_ = sio.load(directory / MODEL_FILE, trusted=TRUSTED_TYPES)

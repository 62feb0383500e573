"""An ensemble as served: ``EnsembleModel`` combines its members (each a zoo model or a ``Bag`` of k fold models)
the way ``pmls.ml.ensemble`` chose, behind the zoo model's public surface, and saves without pickles.

Importing it never imports JAX: a served ensemble only mixes with the weights it was given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pmls.contracts import ModelType, Task
from pmls.ml.ensemble import EnsembleChoice, combine
from pmls.ml.errors import DataError

ENSEMBLE_FILE = "ensemble.json"
FORMAT_VERSION = 1

BAG_FILE = "bag.json"


class Bag:
    """k models of one configuration, each fitted without one of k folds; predictions are their mean.

    What AutoGluon calls bagging: every row of training + validation is used by k-1 of the models, and
    each model stopped early on the fold it did not see, so the member needs no fixed iteration count.
    """

    def __init__(self, models: Sequence[Any], task: Task) -> None:
        if not models:
            raise DataError("ensemble", "a bag needs at least one model")
        self.models = list(models)
        self.task = Task(task)
        self.sequential = bool(getattr(self.models[0], "sequential", False))
        self.model_type = self.models[0].model_type
        self.best_iteration_ = getattr(self.models[0], "best_iteration_", None)

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.mean([m.predict_proba(X) for m in self.models], axis=0)

    def predict(self, X: Any) -> np.ndarray:
        if self.task is Task.REGRESSION:
            return np.mean([np.asarray(m.predict(X), dtype=np.float64) for m in self.models], axis=0)
        return self.predict_proba(X).argmax(axis=1).astype(np.int64)

    @property
    def feature_importances_(self) -> np.ndarray | None:
        found = [
            np.asarray(m.feature_importances_, dtype=np.float64)
            for m in self.models
            if getattr(m, "feature_importances_", None) is not None
        ]
        return np.mean(found, axis=0) if found else None

    def save(self, directory: Path) -> None:
        """``model-{j}/`` per bagged model, then bag.json (last: marks complete)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for j, model in enumerate(self.models):
            model.save(directory / f"model-{j}")
        meta = {"format_version": FORMAT_VERSION, "task": self.task.value, "models": len(self.models)}
        (directory / BAG_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> Bag:
        from pmls.ml.zoo import load_model

        meta = json.loads((Path(directory) / BAG_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError("model", f"unsupported bag format {meta.get('format_version')!r}")
        return cls(
            [load_model(Path(directory) / f"model-{j}") for j in range(meta["models"])], Task(meta["task"])
        )


def load_member(directory: Path):
    """An ensemble member: one zoo model, or a bag of them."""
    from pmls.ml.zoo import load_model

    return Bag.load(directory) if (Path(directory) / BAG_FILE).is_file() else load_model(directory)


class EnsembleModel:
    """The chosen ensemble behind the zoo model's public surface (predict, predict_proba, save, load).

    ``members`` are aligned with ``choice.members``. Tabular members take a 2-D matrix, sequential
    ones (LSTM) 3-D windows of the same rows; with any sequential member, ``predict`` takes
    ``{"tabular": X2d, "sequence": X3d}``.
    """

    model_type: ClassVar[ModelType] = ModelType.ENSEMBLE

    def __init__(
        self,
        members: Sequence[Any],
        choice: EnsembleChoice,
        task: Task,
        num_classes: int | None = None,
        sequential: Sequence[bool] | None = None,
    ) -> None:
        if len(members) != len(choice.members):
            raise DataError("ensemble", f"{len(choice.members)} chosen members, {len(members)} models given")
        self.members = list(members)
        self.choice = choice
        self.task = Task(task)
        self.num_classes = num_classes
        flags = sequential if sequential is not None else [getattr(m, "sequential", False) for m in members]
        self.sequential = [bool(f) for f in flags]
        self.best_iteration_ = None

    def _input(self, X: Any, sequential: bool) -> np.ndarray:
        key = "sequence" if sequential else "tabular"
        if isinstance(X, dict) and key in X:
            return X[key]
        if isinstance(X, dict) or sequential:
            raise DataError(
                "input", f'this ensemble needs "{key}" input: pass {{"tabular": X, "sequence": W}}'
            )
        return X

    def _scores(self, X: Any) -> np.ndarray:
        scores = []
        for member, sequential in zip(self.members, self.sequential, strict=True):
            inputs = self._input(X, sequential)
            regression = self.task is Task.REGRESSION
            scores.append(member.predict(inputs) if regression else member.predict_proba(inputs))
        return combine(scores, self.choice, self.task)

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task is Task.REGRESSION:
            raise DataError("task", "predict_proba needs a classifier; this ensemble is a regressor")
        return self._scores(X)

    def predict(self, X: Any) -> np.ndarray:
        scores = self._scores(X)
        if self.task is Task.REGRESSION:
            return np.asarray(scores, dtype=np.float64)
        return scores.argmax(axis=1).astype(np.int64)

    @property
    def feature_importances_(self) -> np.ndarray | None:
        """Members' importances averaged by their weights (uniform for stacking), where they exist."""
        weights = self.choice.weights or [1.0] * len(self.members)
        found = [
            (w, np.asarray(m.feature_importances_, dtype=np.float64))
            for w, m in zip(weights, self.members, strict=True)
            if getattr(m, "feature_importances_", None) is not None
        ]
        if not found:
            return None
        width = len(found[0][1])
        found = [(w, imp) for w, imp in found if len(imp) == width]  # skip members on another feature set
        total = sum(w for w, _ in found)
        return sum(w * imp for w, imp in found) / total if total > 0 else None

    @property
    def n_classes_(self) -> int | None:
        return self.num_classes

    def save(self, directory: Path) -> None:
        """Each member in ``member-{i}/`` via its own save, then ensemble.json (last: marks complete)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, member in enumerate(self.members):
            member.save(directory / f"member-{i}")
        meta = {
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type.value,
            "task": self.task.value,
            "num_classes": self.num_classes,
            "sequential": self.sequential,
            "choice": self.choice.to_dict(),
        }
        (directory / ENSEMBLE_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> EnsembleModel:
        directory = Path(directory)
        path = directory / ENSEMBLE_FILE
        if not path.is_file():
            raise DataError("model", f"{directory} holds no saved ensemble ({ENSEMBLE_FILE} is missing)")
        meta = json.loads(path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError("model", f"unsupported ensemble format {meta.get('format_version')!r}")
        choice = EnsembleChoice.from_dict(meta["choice"])
        members = [load_member(directory / f"member-{i}") for i in range(len(choice.members))]
        return cls(members, choice, Task(meta["task"]), meta["num_classes"], meta["sequential"])

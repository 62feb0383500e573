"""Save / load a trained model as a plain directory, and wrap it as an MLflow pyfunc model.

The bundle (preprocessor.json, model.txt, meta.json) needs no pickles, so it loads across versions;
the pyfunc model carries the bundle as an artifact and a copy of the pmls code, so it serves raw rows
wherever MLflow runs, with or without pmls installed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import pandas as pd

from pmls.contracts import Task
from pmls.ml.preprocess import Preprocessor
from pmls.ml.training import TrainedModel, predict_frame

PREPROCESSOR_FILE = "preprocessor.json"
MODEL_FILE = "model.txt"
META_FILE = "meta.json"
REQUIREMENTS = ("lightgbm", "polars", "numpy", "pandas", "scikit-learn", "mlflow", "pydantic", "pyarrow")


@dataclass
class Bundle:
    preprocessor: Preprocessor
    booster: lgb.Booster
    task: Task
    classes: list | None
    primary_metric: str
    best_iteration: int
    params: dict

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return predict_frame(self.preprocessor, self.booster, self.task, self.classes, frame)


def save_bundle(model: TrainedModel, directory: str | Path) -> Path:
    """Write the model as three plain files; return the directory."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / PREPROCESSOR_FILE).write_text(json.dumps(model.preprocessor.to_dict(), indent=1))
    # Only the trees up to the best iteration: the later ones overfit and would just be skipped.
    model.booster.save_model(str(path / MODEL_FILE), num_iteration=model.best_iteration)
    meta = {
        "task": model.task.value,
        "classes": model.classes,
        "primary_metric": model.primary_metric,
        "best_iteration": model.best_iteration,
        "params": model.params,
    }
    (path / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    return path


def load_bundle(directory: str | Path) -> Bundle:
    path = Path(directory)
    meta = json.loads((path / META_FILE).read_text())
    preprocessor = Preprocessor.from_dict(json.loads((path / PREPROCESSOR_FILE).read_text()))
    booster = lgb.Booster(model_file=str(path / MODEL_FILE))
    return Bundle(
        preprocessor,
        booster,
        Task(meta["task"]),
        meta["classes"],
        meta["primary_metric"],
        int(meta["best_iteration"]),
        meta["params"],
    )


class PmlsPyfuncModel(mlflow.pyfunc.PythonModel):
    """Raw rows (the source's columns, target not needed) in; the prediction frame out."""

    def load_context(self, context: Any) -> None:
        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.bundle.predict(model_input)


def pip_requirements() -> list[str]:
    """Exact pins of what the served model imports, from this environment."""
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def _stage_code(root: Path) -> Path:
    """Copy the pmls package into root/pmls, without caches and data files that would bloat the model."""
    package = Path(__file__).resolve().parent.parent
    skip = shutil.ignore_patterns(
        "__pycache__", "*.pyc", "*.parquet", "*.csv", "*.ndjson", "*.db", "*.sqlite"
    )
    return Path(shutil.copytree(package, root / "pmls", ignore=skip))


def log_pyfunc_model(
    model: TrainedModel,
    bundle_dir: str | Path,
    sample_input: pd.DataFrame,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
) -> Any:
    """Log the bundle as a pyfunc model in the active run; return MLflow's ModelInfo."""
    from mlflow.models import infer_signature

    sample_output = predict_frame(model.preprocessor, model.booster, model.task, model.classes, sample_input)
    # An explicit signature and requirements keep log_model fast (inference takes ~12 s).
    signature = infer_signature(sample_input, sample_output)
    with tempfile.TemporaryDirectory(prefix="pmls-code-") as tmp, warnings.catch_warnings():
        # The signature is explicit; an input example would only cost a prediction per log.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=PmlsPyfuncModel(),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
            input_example=None,
            pip_requirements=pip_requirements(),
            code_paths=[str(_stage_code(Path(tmp)))],
            registered_model_name=registered_model_name,
        )

"""The MLflow face of a bundle (:mod:`pmls.ml.bundle`): a pyfunc model that takes raw rows and does its own
preprocessing.

The pyfunc carries the bundle as an artifact and a copy of the pmls code, so it serves wherever MLflow
runs, with or without pmls installed.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from pmls.contracts import ModelType
from pmls.ml.bundle import Bundle, load_bundle

BASE_REQUIREMENTS = ("polars", "numpy", "pandas", "scikit-learn", "mlflow", "pydantic", "pyarrow")
FAMILY_REQUIREMENTS = {
    ModelType.LIGHTGBM: ("lightgbm",),
    ModelType.XGBOOST: ("xgboost",),
    ModelType.RANDOM_FOREST: ("skops",),
    ModelType.NEURAL_NETWORK: ("torch", "safetensors"),
    ModelType.LSTM: ("torch", "safetensors"),
}


class PmlsPyfuncModel(mlflow.pyfunc.PythonModel):
    """Raw rows (the source's columns, target not needed) in; the prediction frame out."""

    def load_context(self, context: Any) -> None:
        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.bundle.predict(model_input)


def pip_requirements(model_type: ModelType) -> list[str]:
    """Exact pins of what the served model imports, from this environment."""
    if model_type is ModelType.ENSEMBLE:
        extra = tuple(dict.fromkeys(n for reqs in FAMILY_REQUIREMENTS.values() for n in reqs))
    else:
        extra = FAMILY_REQUIREMENTS.get(model_type, ())
    names = BASE_REQUIREMENTS + extra
    return [f"{name}=={version(name)}" for name in names]


def _stage_code(root: Path) -> Path:
    """Copy the pmls package into root/pmls, without caches and data files that would bloat the model."""
    package = Path(__file__).resolve().parent.parent
    skip = shutil.ignore_patterns(
        "__pycache__", "*.pyc", "*.parquet", "*.csv", "*.ndjson", "*.db", "*.sqlite"
    )
    return Path(shutil.copytree(package, root / "pmls", ignore=skip))


def log_pyfunc_model(
    bundle: Bundle, bundle_dir: str | Path, sample_input: pd.DataFrame, *, name: str = "model"
) -> Any:
    """Log the bundle as a pyfunc model in the active run; return MLflow's ModelInfo."""
    from mlflow.models import infer_signature

    # An explicit signature and requirements keep log_model fast (inference takes ~12 s).
    signature = infer_signature(sample_input, bundle.predict(sample_input))
    with tempfile.TemporaryDirectory(prefix="pmls-code-") as tmp, warnings.catch_warnings():
        # No input example on purpose: the signature says the same, and examples cost a prediction run.
        warnings.filterwarnings("ignore", message=".*[Ii]nput example.*")
        return mlflow.pyfunc.log_model(
            name=name,
            # Models from code: MLflow stores this file, not a cloudpickle of the model object.
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
            input_example=None,
            pip_requirements=pip_requirements(bundle.model_type),
            code_paths=[str(_stage_code(Path(tmp)))],
        )

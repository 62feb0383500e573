"""A trained model as a plain directory: preprocessor, kept columns, the family's own safe files, meta.

It predicts from raw rows exactly as the training rows were prepared, which is what the MLflow pyfunc
model serves. No pickles, so a bundle loads across library versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from pmls.contracts import DatasetConfig, ModelType, Task
from pmls.ml.preprocess import Preprocessor

PREPROCESSOR_FILE = "preprocessor.json"
META_FILE = "meta.json"
MODEL_DIR = "model"
FITTED_ROWS_FILE = "fitted_rows.npy"


@dataclass
class Bundle:
    preprocessor: Preprocessor
    model: Any
    model_type: ModelType
    task: Task
    classes: list | None
    metric: str
    kept: list[int]
    seq_len: int | None = None
    timestamp_column: str | None = None
    entity_column: str | None = None
    params: dict | None = None
    fitted_on: list[str] | None = None  # the periods of its job the model was fitted on
    fitted_columns: list[str] | None = None  # the columns its fitted rows' fingerprints are taken over
    fitted_rows: np.ndarray | None = None  # sorted fingerprints (data.row_fingerprints) of those rows

    def unseen(self, frame: pl.DataFrame) -> np.ndarray | None:
        """A mask of the rows of ``frame`` this model was not fitted on (None: it cannot tell)."""
        if self.fitted_rows is None or not self.fitted_columns:
            return None
        if any(c not in frame.columns for c in self.fitted_columns):
            return None
        from pmls.ml.data import row_fingerprints

        return ~np.isin(row_fingerprints(frame, self.fitted_columns), self.fitted_rows)

    @property
    def input_columns(self) -> list[str]:
        """The raw columns a request must carry (its signature); other columns are ignored."""
        columns = list(self.preprocessor.kinds_)
        if self.seq_len is not None:
            columns += [c for c in (self.timestamp_column, self.entity_column) if c and c not in columns]
        return columns

    def inputs(self, frame: Any) -> Any:
        X = self.preprocessor.transform(frame)[:, self.kept]
        if self.seq_len is None:
            return X
        if self.model_type is ModelType.ENSEMBLE:
            return {"tabular": X, "sequence": self._windows(frame, X)}
        return self._windows(frame, X)

    def _windows(self, frame: Any, X: np.ndarray) -> np.ndarray:
        from pmls.ml.data import _as_naive_datetime
        from pmls.ml.sequences import build_sequences

        raw = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(pd.DataFrame(frame))
        ts = _as_naive_datetime(raw.select(self.timestamp_column), self.timestamp_column)
        order = ts.get_column(self.timestamp_column).dt.epoch("us").fill_null(0).to_numpy()
        entity = (
            raw.get_column(self.entity_column).cast(pl.String).hash(seed=0).to_numpy()
            if self.entity_column
            else np.zeros(raw.height, dtype=np.int64)
        )
        # Each row's window is built from the rows of the same request that precede it in time.
        return build_sequences(X, entity.astype(np.int64), order.astype(np.int64), self.seq_len)

    def predict(self, frame: Any) -> pd.DataFrame:
        """``prediction`` (original labels / values), plus ``proba_<class>`` for classification."""
        X = self.inputs(frame)
        index = frame.index if isinstance(frame, pd.DataFrame) else None
        if self.task is Task.REGRESSION:
            return pd.DataFrame(
                {"prediction": np.asarray(self.model.predict(X), dtype=np.float64)}, index=index
            )
        proba = np.asarray(self.model.predict_proba(X), dtype=np.float64)
        labels = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        out = pd.DataFrame({"prediction": pd.Series(labels.tolist(), index=index)})
        for k, label in enumerate(self.classes):
            out[f"proba_{label}"] = proba[:, k]
        return out


def save_bundle(
    directory: Path,
    *,
    final,
    prepared,
    cfg: DatasetConfig,
    model_type: ModelType,
    params: dict,
    fitted_rows: pl.DataFrame | None = None,
) -> Path:
    """``fitted_rows``: the raw rows the model was fitted on; their fingerprints are kept with it."""
    from pmls.ml.data import row_fingerprints

    directory.mkdir(parents=True, exist_ok=True)
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(prepared.preprocessor.to_dict(), indent=1))
    final.model.save(directory / MODEL_DIR)
    meta = {
        "model_type": model_type.value,
        "task": prepared.task.value,
        "classes": prepared.classes,
        "metric": prepared.metric,
        "kept": prepared.kept,
        "seq_len": final.seq_len,
        "timestamp_column": cfg.timestamp_column,
        "entity_column": cfg.entity_column,
        "params": params,
        "fitted_on": list(getattr(final, "fitted_on", ())),
        "fitted_columns": None,
    }
    if fitted_rows is not None:
        meta["fitted_columns"] = sorted(fitted_rows.columns)
        np.save(directory / FITTED_ROWS_FILE, np.unique(row_fingerprints(fitted_rows)), allow_pickle=False)
    (directory / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    return directory


def bundle_digest(directory: str | Path) -> str:
    """SHA-256 over every file of a bundle (relative path and bytes, in path order): recorded at registration,
    checked before the service loads a registered version."""
    import hashlib

    root = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def load_bundle(directory: str | Path) -> Bundle:
    path = Path(directory)
    meta = json.loads((path / META_FILE).read_text())
    if meta["model_type"] == ModelType.ENSEMBLE.value:
        from pmls.ml.ensemble_model import EnsembleModel

        load_model = EnsembleModel.load
    else:
        from pmls.ml.zoo import load_model
    return Bundle(
        preprocessor=Preprocessor.from_dict(json.loads((path / PREPROCESSOR_FILE).read_text())),
        model=load_model(path / MODEL_DIR),
        model_type=ModelType(meta["model_type"]),
        task=Task(meta["task"]),
        classes=meta["classes"],
        metric=meta["metric"],
        kept=list(meta["kept"]),
        seq_len=meta["seq_len"],
        timestamp_column=meta["timestamp_column"],
        entity_column=meta["entity_column"],
        params=meta["params"],
        fitted_on=meta.get("fitted_on"),
        fitted_columns=meta.get("fitted_columns"),
        fitted_rows=np.load(rows, allow_pickle=False)
        if (rows := path / FITTED_ROWS_FILE).is_file()
        else None,
    )

"""CPU activities on the trials queue: load, split and train. Sync, run in the worker's thread pool."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path

import polars as pl
from temporalio import activity

from activities.errors import input_errors
from pmls.contracts.workflow import (
    DatasetRef,
    LoadDatasetInput,
    SplitDatasetInput,
    SplitRef,
    TrainedModelRef,
    TrainModelInput,
)
from pmls.ml.data import Splits, load_source, prepare_splits
from pmls.ml.serving import load_bundle, save_bundle
from pmls.ml.training import train_model


class FrameCache:
    """Prepared frames by content hash, so a worker does not re-read what the previous activity wrote."""

    def __init__(self, capacity: int = 8) -> None:
        self._frames: OrderedDict[str, pl.DataFrame] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def read(self, ref: DatasetRef) -> pl.DataFrame:
        with self._lock:
            if ref.content_hash in self._frames:
                self._frames.move_to_end(ref.content_hash)
                return self._frames[ref.content_hash]
        frame = pl.read_parquet(ref.uri)
        self.put(ref.content_hash, frame)
        return frame

    def put(self, key: str, frame: pl.DataFrame) -> None:
        with self._lock:
            self._frames[key] = frame
            while len(self._frames) > self._capacity:
                self._frames.popitem(last=False)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DataActivities:
    def __init__(self, artifact_root: str, *, threads_per_trial: int = 1, frames: FrameCache | None = None) -> None:
        self.root = Path(artifact_root)
        self.threads = threads_per_trial  # slots x threads = cores: concurrent trials must not oversubscribe
        self.frames = frames or FrameCache()

    def _job_dir(self, job_id: str) -> Path:
        path = self.root / "jobs" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write(self, frame: pl.DataFrame, path: Path) -> DatasetRef:
        frame.write_parquet(path)
        ref = DatasetRef(uri=str(path), content_hash=_file_hash(path), rows=frame.height, columns=frame.columns)
        self.frames.put(ref.content_hash, frame)
        return ref

    @activity.defn(name="load_dataset")
    def load_dataset(self, inp: LoadDatasetInput) -> DatasetRef:
        """Read the source (Polars), keep a snapshot of exactly what this job trains on."""
        activity.heartbeat("loading")
        with input_errors():
            frame = load_source(inp.dataset_config.source)
        return self._write(frame, self._job_dir(inp.job_id) / "dataset.parquet")

    @activity.defn(name="split_dataset")
    def split_dataset(self, inp: SplitDatasetInput) -> SplitRef:
        """Split once per job; every later stage uses these three frames."""
        activity.heartbeat("splitting")
        with input_errors():
            splits = prepare_splits(self.frames.read(inp.dataset), inp.dataset_config, seed=inp.seed)
        out = self._job_dir(inp.job_id)
        return SplitRef(
            train=self._write(splits.train, out / "train.parquet"),
            validation=self._write(splits.validation, out / "validation.parquet"),
            test=self._write(splits.test, out / "test.parquet"),
            task=splits.task, classes=splits.classes, description=splits.description,
        )

    @activity.defn(name="train_model")
    def train_model(self, inp: TrainModelInput) -> TrainedModelRef:
        """Fit one model; heartbeats every boosting round so cancellation lands between rounds."""
        activity.heartbeat("preparing")
        started = time.monotonic()
        ref = inp.splits
        splits = Splits(train=self.frames.read(ref.train), validation=self.frames.read(ref.validation),
                        test=self.frames.read(ref.test), task=ref.task, classes=ref.classes,
                        description=ref.description)

        def heartbeat(iteration: int, total: int) -> None:
            activity.heartbeat({"iteration": iteration, "of": total})

        with input_errors():
            params = {"num_threads": self.threads, **(inp.params or {})}
            model = train_model(splits, inp.dataset_config, inp.model_type, params=params, seed=inp.seed,
                                callbacks=[heartbeat])
        bundle_dir = save_bundle(model, self._job_dir(inp.job_id) / "model")
        return TrainedModelRef(
            bundle_uri=str(bundle_dir), task=model.task, classes=model.classes, primary_metric=model.primary_metric, metrics=model.metrics,
            best_iteration=int(model.best_iteration), params=_plain(model.params),
            model_size_mb=_size_mb(bundle_dir),
            latency_ms_per_row=_latency_ms(bundle_dir, splits, inp.dataset_config.target),
            duration_seconds=time.monotonic() - started,
        )


def _size_mb(directory: Path) -> float:
    return round(sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20, 4)


def _latency_ms(bundle_dir: Path, splits: Splits, target: str) -> float:
    """Prediction latency per row through the same code path the registered model serves with."""
    rows = splits.test.drop(target).head(1000).to_pandas()
    bundle = load_bundle(bundle_dir)
    started = time.perf_counter()
    bundle.predict(rows)
    return round((time.perf_counter() - started) * 1000 / max(len(rows), 1), 5)


def _plain(params: dict) -> dict:
    return {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in params.items()}

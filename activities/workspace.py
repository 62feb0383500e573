"""What the trials queue's activities share in one worker process: the job folders under the artifact root,
the frames and prepared data sets already read (by content hash / path), and the progress heartbeat."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import polars as pl
from temporalio import activity

from pmls.contracts.workflow import DatasetRef, SplitRef
from pmls.ml.data import Splits
from pmls.ml.prepared import Prepared

SPLIT_FILES = {"train": "train.parquet", "validation": "validation.parquet", "test": "test.parquet"}
V = TypeVar("V")


class LruCache(Generic[V]):
    """The last ``capacity`` values by key, safe across the worker's trial threads."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[str, V] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load()  # outside the lock: two threads may load the same key once each, never block
        self.put(key, value)
        return value

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


class Workspace:
    def __init__(self, artifact_root: str, *, threads_per_trial: int = 1) -> None:
        self.root = Path(artifact_root)
        self.threads = threads_per_trial  # slots x threads = cores: concurrent trials must not oversubscribe
        self._frames: LruCache[pl.DataFrame] = LruCache(8)
        self._prepared: LruCache[Prepared] = LruCache(4)

    def job_dir(self, job_id: str) -> Path:
        path = self.root / "jobs" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_frame(self, frame: pl.DataFrame, path: Path) -> DatasetRef:
        frame.write_parquet(path)
        ref = DatasetRef(
            uri=str(path), content_hash=_file_hash(path), rows=frame.height, columns=frame.columns
        )
        self._frames.put(ref.content_hash, frame)
        return ref

    def frame(self, ref: DatasetRef) -> pl.DataFrame:
        return self._frames.get(ref.content_hash, lambda: pl.read_parquet(ref.uri))

    def splits(self, ref: SplitRef) -> Splits:
        return Splits(
            train=self.frame(ref.train),
            validation=self.frame(ref.validation),
            test=self.frame(ref.test),
            task=ref.task,
            classes=ref.classes,
            description=ref.description,
        )

    def prepared(self, uri: str) -> Prepared:
        """Prepared data by path: the trials of one job reuse it (and its sequence windows) in this worker."""
        return self._prepared.get(uri, lambda: Prepared.load(Path(uri)))

    def keep_prepared(self, uri: str, prepared: Prepared) -> None:
        self._prepared.put(uri, prepared)

    def save_oof(self, job_id: str, name: str, oof) -> str | None:
        """Out-of-fold scores by reference: ensembles of this job read them back."""
        if oof is None:
            return None
        path = self.job_dir(job_id) / "oof" / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, oof, allow_pickle=False)
        return str(path)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


HEARTBEAT_SECONDS = 1.0
_last_beat = threading.local()


def heartbeat(iteration: int, total: int, loss: float | None = None) -> None:
    """Progress from a training loop (per boosting round or epoch), at most once a second: each heartbeat
    from a threaded activity wakes the worker's event loop, and per round that slows a short trial a lot.
    Temporal sends one a second anyway, so a cancel still lands within ~2 s."""
    now = time.monotonic()
    if now - getattr(_last_beat, "at", -1e9) < HEARTBEAT_SECONDS and iteration < total:
        return
    _last_beat.at = now
    activity.heartbeat({"iteration": iteration, "of": total})

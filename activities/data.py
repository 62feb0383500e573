"""CPU activities on the trials queue: load, split and train. Sync, run in the worker's thread pool."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import polars as pl
from temporalio import activity

from activities.errors import input_errors
from pmls.contracts import ModelType
from pmls.contracts.workflow import (
    BuildEnsembleInput,
    CrossValidateInput,
    CVScore,
    DatasetRef,
    FitFinalInput,
    LoadDatasetInput,
    PreparedRef,
    PrepareInput,
    SplitDatasetInput,
    SplitRef,
    TrainedModelRef,
)
from pmls.ml.bundle import load_bundle, save_bundle
from pmls.ml.data import Splits, load_source, prepare_splits
from pmls.ml.pipeline import (
    Candidate,
    FinalModel,
    FitOptions,
    Prepared,
    build_ensemble,
    cross_validate,
    fit_final,
    higher_is_better,
    prepare,
)

SPLIT_FILES = {"train": "train.parquet", "validation": "validation.parquet", "test": "test.parquet"}
TEST_SCORES_FILE = "test_scores.npy"


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
    def __init__(self, artifact_root: str, *, threads_per_trial: int = 1) -> None:
        self.root = Path(artifact_root)
        self.threads = threads_per_trial  # slots x threads = cores: concurrent trials must not oversubscribe
        self.frames = FrameCache()
        self.prepared = PreparedCache()

    def _job_dir(self, job_id: str) -> Path:
        path = self.root / "jobs" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write(self, frame: pl.DataFrame, path: Path) -> DatasetRef:
        frame.write_parquet(path)
        ref = DatasetRef(
            uri=str(path), content_hash=_file_hash(path), rows=frame.height, columns=frame.columns
        )
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
            train=self._write(splits.train, out / SPLIT_FILES["train"]),
            validation=self._write(splits.validation, out / SPLIT_FILES["validation"]),
            test=self._write(splits.test, out / SPLIT_FILES["test"]),
            task=splits.task,
            classes=splits.classes,
            description=splits.description,
        )

    @activity.defn(name="prepare_features")
    def prepare_features(self, inp: PrepareInput) -> PreparedRef:
        """Fit the preprocessing on the training period, plan the CV folds, select features — once per job."""
        activity.heartbeat("preparing")
        splits = self._splits(inp.splits)
        with input_errors():
            prepared = prepare(splits, inp.dataset_config, inp.validation_config, seed=inp.seed)
        path = prepared.save(self._job_dir(inp.job_id) / "prepared")
        self.prepared.put(str(path), prepared)
        plan = prepared.plan
        return PreparedRef(
            uri=str(path),
            task=prepared.task,
            metric=prepared.metric,
            higher_is_better=higher_is_better(prepared.metric),
            features=prepared.names,
            dropped_features=prepared.selection.dropped if prepared.selection else {},
            cv_strategy=plan.strategy,
            cv_folds=len(plan.folds),
            cv_description=plan.description,
            rows={s: int(len(prepared.y[s])) for s in ("train", "validation", "test")},
        )

    @activity.defn(name="cross_validate")
    def cross_validate(self, inp: CrossValidateInput) -> CVScore:
        """Score one configuration on the job's folds; heartbeats every round/epoch carry cancellation."""
        activity.heartbeat("starting")
        started = time.monotonic()
        prepared, opts = self._prepared_and_options(inp)
        with input_errors():
            result = cross_validate(prepared, opts, callbacks=[_heartbeat])
        oof_uri = self.save_oof(inp.job_id, f"{inp.model_type.value.lower()}-fixed", result.oof)
        return CVScore(
            metric=result.metric,
            scores=result.scores,
            mean=result.mean,
            std=result.std,
            best_iterations=result.best_iterations,
            duration_seconds=time.monotonic() - started,
            oof_uri=oof_uri,
        )

    def save_oof(self, job_id: str, name: str, oof) -> str | None:
        """Out-of-fold scores by reference: ensembles of this job read them back."""
        if oof is None:
            return None
        path = self._job_dir(job_id) / "oof" / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, oof, allow_pickle=False)
        return str(path)

    @activity.defn(name="build_ensemble")
    def build_ensemble(self, inp: BuildEnsembleInput) -> TrainedModelRef:
        """Single, Caruana, JAX blend or stacking — whichever wins on the held-out rows — refit, scored, saved."""
        activity.heartbeat("starting")
        started = time.monotonic()
        prepared = self.prepared.get(inp.prepared.uri)
        candidates = [
            Candidate(
                FitOptions.from_config(
                    inp.dataset_config, c.model_type, c.params, seed=inp.seed, num_threads=self.threads
                ),
                np.load(c.cv.oof_uri, allow_pickle=False) if c.cv.oof_uri else None,
                c.cv.mean,
                c.cv.best_iterations,
            )
            for c in inp.candidates
        ]
        with input_errors():
            outcome = build_ensemble(
                prepared,
                candidates,
                seed=inp.seed,
                callbacks=[_heartbeat],
                bag_folds=inp.bag_folds,
                refit_all=inp.refit_full,
            )
        bundle_dir = self._save(inp, outcome.final, prepared, ModelType.ENSEMBLE, {})
        choice = outcome.choice
        cv = _ensemble_cv(inp, choice)
        return TrainedModelRef(
            bundle_uri=str(bundle_dir),
            task=prepared.task,
            classes=prepared.classes,
            primary_metric=prepared.metric,
            metrics=outcome.final.metrics.model_copy(
                update={"cross_validation_scores": cv.scores if cv else []}
            ),
            best_iteration=0,
            params={},
            model_size_mb=_size_mb(bundle_dir),
            latency_ms_per_row=_latency_ms(bundle_dir, inp),
            duration_seconds=time.monotonic() - started,
            model_type=ModelType.ENSEMBLE,
            cv=cv,
            features=inp.prepared.features,
            dropped_features=inp.prepared.dropped_features,
            ensemble={
                "method": choice.method,
                "weights": choice.weights,
                "members": choice.members,
                "heldout_scores": choice.scores,
                "validation_scores": choice.validation_scores,
                "heldout_rows": choice.heldout_rows,
                "candidates": _plain_candidates(outcome.candidates),
                "bag_folds": inp.bag_folds if inp.bag_folds >= 2 else 0,
            },
            fitted_on=list(outcome.final.fitted_on),
            evaluated_with=list(outcome.final.evaluated_with),
            test_scores_uri=str(bundle_dir.parent / TEST_SCORES_FILE),
        )

    @activity.defn(name="fit_final")
    def fit_final(self, inp: FitFinalInput) -> TrainedModelRef:
        """Fit the chosen configuration, score every period, save the serving bundle."""
        activity.heartbeat("starting")
        started = time.monotonic()
        prepared, opts = self._prepared_and_options(inp)
        with input_errors():
            final = fit_final(
                prepared,
                opts,
                cv_scores=inp.cv.scores if inp.cv else (),
                cv_iterations=inp.cv.best_iterations if inp.cv else (),
                callbacks=[_heartbeat],
                refit_all=inp.refit_full,
            )
        bundle_dir = self._save(inp, final, prepared, inp.model_type, _plain(opts.params))
        return TrainedModelRef(
            bundle_uri=str(bundle_dir),
            task=prepared.task,
            classes=prepared.classes,
            primary_metric=prepared.metric,
            metrics=final.metrics,
            best_iteration=int(final.model.best_iteration_ or 0),
            params=_plain(opts.params),
            model_size_mb=_size_mb(bundle_dir),
            latency_ms_per_row=_latency_ms(bundle_dir, inp),
            duration_seconds=time.monotonic() - started,
            model_type=inp.model_type,
            cv=inp.cv,
            features=inp.prepared.features,
            dropped_features=inp.prepared.dropped_features,
            fitted_on=list(final.fitted_on),
            evaluated_with=list(final.evaluated_with),
            test_scores_uri=str(bundle_dir.parent / TEST_SCORES_FILE),
        )

    def _save(
        self,
        inp: FitFinalInput | BuildEnsembleInput,
        final: FinalModel,
        prepared: Prepared,
        model_type: ModelType,
        params: dict,
    ) -> Path:
        """The serving bundle (with the fingerprints of the rows its model was fitted on) and, beside it,
        the test predictions its test metrics come from."""
        job_dir = self._job_dir(inp.job_id)
        rows = pl.concat(
            [pl.read_parquet(job_dir / SPLIT_FILES[s]) for s in final.fitted_on], how="vertical_relaxed"
        )
        bundle_dir = save_bundle(
            job_dir / "model",
            final=final,
            prepared=prepared,
            cfg=inp.dataset_config,
            model_type=model_type,
            params=params,
            fitted_rows=rows,
        )
        if final.test_scores is not None:
            np.save(job_dir / TEST_SCORES_FILE, final.test_scores, allow_pickle=False)
        return bundle_dir

    def _prepared_and_options(self, inp: CrossValidateInput | FitFinalInput) -> tuple[Prepared, FitOptions]:
        opts = FitOptions.from_config(
            inp.dataset_config, inp.model_type, inp.params, seed=inp.seed, num_threads=self.threads
        )
        return self.prepared.get(inp.prepared.uri), opts

    def _splits(self, ref: SplitRef) -> Splits:
        return Splits(
            train=self.frames.read(ref.train),
            validation=self.frames.read(ref.validation),
            test=self.frames.read(ref.test),
            task=ref.task,
            classes=ref.classes,
            description=ref.description,
        )


HEARTBEAT_SECONDS = 1.0
_last_beat = threading.local()


def _heartbeat(iteration: int, total: int, loss: float | None = None) -> None:
    """Progress from a training loop, at most once a second.

    Called per boosting round or epoch. Each ``activity.heartbeat`` from a threaded activity wakes the
    worker's event loop (a task, a payload encode, under the GIL): per round that slowed a 1 s LightGBM
    trial by a third. Temporal sends one heartbeat a second anyway; a cancel still lands within ~2 s.
    """
    now = time.monotonic()
    if now - getattr(_last_beat, "at", -1e9) < HEARTBEAT_SECONDS and iteration < total:
        return
    _last_beat.at = now
    activity.heartbeat({"iteration": iteration, "of": total})


class PreparedCache:
    """Prepared data by path: trials of one job reuse it (and its sequence windows) in this worker."""

    def __init__(self, capacity: int = 4) -> None:
        self._items: OrderedDict[str, Prepared] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, uri: str) -> Prepared:
        with self._lock:
            if uri in self._items:
                self._items.move_to_end(uri)
                return self._items[uri]
        prepared = Prepared.load(Path(uri))
        self.put(uri, prepared)
        return prepared

    def put(self, uri: str, prepared: Prepared) -> None:
        with self._lock:
            self._items[uri] = prepared
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


def _ensemble_cv(inp: BuildEnsembleInput, choice) -> CVScore | None:
    """The CV scores reported for an ensemble: its best single member's (weights were learnt out of fold)."""
    members = [inp.candidates[i].cv for i in choice.members] or [c.cv for c in inp.candidates]
    return max(members, key=lambda cv: cv.mean if inp.prepared.higher_is_better else -cv.mean, default=None)


def _plain_candidates(candidates: list[dict]) -> list[dict]:
    return [{**c, "params": _plain(c["params"])} for c in candidates]


def _size_mb(directory: Path) -> float:
    return round(sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20, 4)


def _latency_ms(bundle_dir: Path, inp: FitFinalInput | BuildEnsembleInput) -> float:
    """Prediction latency per row through the same code path the registered model serves with."""
    rows = pl.read_parquet(Path(inp.prepared.uri).parent / "test.parquet").drop(inp.dataset_config.target)
    rows = rows.head(1000).to_pandas()
    bundle = load_bundle(bundle_dir)
    started = time.perf_counter()
    bundle.predict(rows)
    return round((time.perf_counter() - started) * 1000 / max(len(rows), 1), 5)


def _plain(params: dict) -> dict:
    return {
        k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in params.items()
    }

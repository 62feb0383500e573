"""Training activities on the trials queue: cross-validate a configuration, fit the final model, build an
ensemble. Sync, run in the worker's thread pool; heartbeats every round or epoch carry cancellation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
from temporalio import activity

from activities.errors import input_errors
from activities.workspace import SPLIT_FILES, Workspace, heartbeat
from pmls.contracts import ModelType
from pmls.contracts import activities as contract
from pmls.contracts.workflow import (
    BuildEnsembleInput,
    CrossValidateInput,
    CVScore,
    FitFinalInput,
    TrainedModelRef,
)
from pmls.ml.bundle import load_bundle, save_bundle
from pmls.ml.final import Candidate, FinalModel, build_ensemble, fit_final
from pmls.ml.fitting import FitOptions, cross_validate
from pmls.ml.prepared import Prepared

TEST_SCORES_FILE = "test_scores.npy"


class TrainingActivities(contract.Training):
    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace

    @activity.defn
    def cross_validate(self, inp: CrossValidateInput) -> CVScore:
        """Score one configuration on the job's folds; heartbeats every round/epoch carry cancellation."""
        activity.heartbeat("starting")
        started = time.monotonic()
        prepared, opts = self._prepared_and_options(inp)
        with input_errors():
            result = cross_validate(prepared, opts, callbacks=[heartbeat])
        oof_uri = self.ws.save_oof(inp.job_id, f"{inp.model_type.value.lower()}-fixed", result.oof)
        return CVScore(
            metric=result.metric,
            scores=result.scores,
            mean=result.mean,
            std=result.std,
            best_iterations=result.best_iterations,
            duration_seconds=time.monotonic() - started,
            oof_uri=oof_uri,
        )

    @activity.defn
    def build_ensemble(self, inp: BuildEnsembleInput) -> TrainedModelRef:
        """Single, Caruana, JAX blend or stacking — whichever wins on the held-out rows — refit, scored, saved."""
        activity.heartbeat("starting")
        started = time.monotonic()
        prepared = self.ws.prepared(inp.prepared.uri)
        candidates = [
            Candidate(
                FitOptions.from_config(
                    inp.dataset_config, c.model_type, c.params, seed=inp.seed, num_threads=self.ws.threads
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
                callbacks=[heartbeat],
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

    @activity.defn
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
                callbacks=[heartbeat],
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
        job_dir = self.ws.job_dir(inp.job_id)
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
            inp.dataset_config, inp.model_type, inp.params, seed=inp.seed, num_threads=self.ws.threads
        )
        return self.ws.prepared(inp.prepared.uri), opts


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
    rows = pl.read_parquet(Path(inp.prepared.uri).parent / SPLIT_FILES["test"]).drop(
        inp.dataset_config.target
    )
    rows = rows.head(1000).to_pandas()
    bundle = load_bundle(bundle_dir)
    started = time.perf_counter()
    bundle.predict(rows)
    return round((time.perf_counter() - started) * 1000 / max(len(rows), 1), 5)


def _plain(params: dict) -> dict:
    return {
        k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in params.items()
    }

"""MLflow: one experiment per lineage, one run per job, one registered model version per completed job.

Registration is idempotent: a retried activity finds the version already tagged with its job id.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pmls.contracts import TrainingRequest
from pmls.contracts.ids import model_id as build_model_id
from pmls.contracts.workflow import RegisteredModel, SplitRef, TrainedModelRef
from pmls.ml.bundle import Bundle, bundle_digest, load_bundle

log = logging.getLogger("pmls.registry")
JOB_TAG = "pmls.job_id"
TRIAL_TAG = "pmls.trial"
LOG_THREADS = 4  # nested trial runs logged at once
SMOKE_DIR = "smoke"  # in the run: held-out rows and their predictions, for the smoke test after a promotion


class ModelRegistry:
    def __init__(self, tracking_uri: str) -> None:
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)

    def experiment_id(self, model_name: str) -> str:
        name = f"pmls/{model_name}"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, tags={"pmls.lineage": model_name})
        except MlflowException:  # created concurrently
            return self.client.get_experiment_by_name(name).experiment_id

    def find_version(self, model_name: str, job_id: str) -> Any | None:
        try:
            versions = self.client.search_model_versions(f"name = '{model_name}'")
        except MlflowException:
            return None
        return next((v for v in versions if v.tags.get(JOB_TAG) == job_id), None)

    def _run_for(self, experiment_id: str, job_id: str, tags: dict[str, str]) -> str:
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=1
        )
        if runs:
            return runs[0].info.run_id
        return self.client.create_run(experiment_id, run_name=job_id, tags=tags).info.run_id

    def register(
        self,
        *,
        job_id: str,
        request: TrainingRequest,
        splits: SplitRef,
        trained: TrainedModelRef,
        bundle: Any,
        sample: pd.DataFrame,
        comparison: Any = None,
        plots_dir: Any = None,
        started_by: str | None = None,
    ) -> RegisteredModel:
        from pmls.storage.pyfunc import log_pyfunc_model

        name = request.lineage
        existing = self.find_version(name, job_id)
        if existing is None:
            tags = {
                JOB_TAG: job_id,
                "pmls.model_type": request.model_type.value,
                "pmls.training_mode": request.training_mode.value,
                "pmls.lineage": name,
            }
            run_id = self._run_for(self.experiment_id(name), job_id, tags)
            with mlflow.start_run(run_id=run_id):
                if started_by:
                    mlflow.set_tag(
                        "pmls.started_by", started_by
                    )  # the API caller (token name or JWT subject)
                _log_run(request, splits, trained)
                _log_comparison(comparison)
                if plots_dir is not None:
                    mlflow.log_artifacts(str(plots_dir), "plots")
                if trained.ensemble:
                    mlflow.log_dict(trained.ensemble, "ensemble.json")
                info = log_pyfunc_model(bundle, trained.bundle_uri, sample, name="model")
                _log_smoke_set(bundle, sample)
            existing = mlflow.register_model(
                info.model_uri, name, tags={JOB_TAG: job_id, "pmls.model_type": request.model_type.value}
            )
            self.client.set_terminated(run_id, "FINISHED")
        return RegisteredModel(
            model_id=build_model_id(name, request.model_type.value, str(existing.version)),
            model_name=name,
            version=str(existing.version),
            model_uri=f"models:/{name}/{existing.version}",
            run_id=existing.run_id,
            bundle_sha256=bundle_digest(trained.bundle_uri),
        )

    def start_run(self, *, job_id: str, request: TrainingRequest, seed: int | None = None) -> str:
        """The job's parent run (idempotent): trials nest under it, the final model is logged in it."""
        name = request.lineage
        tags = {
            JOB_TAG: job_id,
            "pmls.model_type": request.model_type.value,
            "pmls.training_mode": request.training_mode.value,
            "pmls.lineage": name,
        }
        if seed is not None:
            tags["pmls.random_seed"] = str(seed)  # rerun with {"random_seed": N} to repeat the search
        return self._run_for(self.experiment_id(name), job_id, tags)

    def end_run(self, run_id: str, status: str) -> None:
        """Close the job's run as ``FAILED`` or ``KILLED`` (a failed or cancelled job), so that the MLflow UI
        does not show it running forever; a run already closed keeps its status."""
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.client.set_terminated(run_id, status)

    def log_trials(self, parent_run_id: str, family: str, results: list) -> None:
        """One nested run per trial (parameters, CV score per fold), batched; no model is logged."""
        from mlflow.entities import Metric, Param, RunTag

        parent = self.client.get_run(parent_run_id)
        experiment = parent.info.experiment_id
        seen = {
            r.data.tags.get(TRIAL_TAG)
            for r in self.client.search_runs(
                [experiment],
                filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                max_results=10_000,
            )
        }
        now = int(time.time() * 1000)

        def log_one(result) -> None:
            key = f"{family.lower()}/trial-{result.number}"
            run = self.client.create_run(
                experiment,
                run_name=key,
                tags={"mlflow.parentRunId": parent_run_id, TRIAL_TAG: key, "pmls.state": result.state},
            )
            metrics = [Metric("duration_seconds", result.duration_seconds, now, 0)]
            if result.score is not None:
                metrics.append(Metric("cv_score", float(result.score), now, 0))
            metrics += [Metric("fold_score", float(v), now, i) for i, v in enumerate(result.fold_scores)]
            params = [Param(k, str(v)[:500]) for k, v in result.params.items()]
            tags = [RunTag("pmls.error", result.error[:5000])] if result.error else []
            self.client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
            status = (
                "FINISHED"
                if result.state == "COMPLETE"
                else "KILLED"
                if result.state != "FAILED"
                else "FAILED"
            )
            self.client.set_terminated(run.info.run_id, status)

        todo = [r for r in results if f"{family.lower()}/trial-{r.number}" not in seen]
        # Three requests per run, each mostly a wait on the server's database: a few at a time.
        with ThreadPoolExecutor(max_workers=min(LOG_THREADS, max(len(todo), 1))) as pool:
            for done in [pool.submit(log_one, r) for r in todo]:
                done.result()

    def champion(self, model_name: str, alias: str, *, exclude_job: str) -> Any | None:
        """The version aliased ``alias`` (production); before any deployment, the latest registered one."""
        try:
            return self.client.get_model_version_by_alias(model_name, alias)
        except MlflowException:
            pass
        try:
            versions = self.client.search_model_versions(f"name = '{model_name}'")
        except MlflowException:
            return None
        earlier = [v for v in versions if v.tags.get(JOB_TAG) != exclude_job]
        return max(earlier, key=lambda v: int(v.version), default=None)

    def load_checked(self, model_name: str, version: str, expected_sha256: str) -> Bundle:
        """A registered version's bundle through pmls's own loader (JSON, LightGBM/XGBoost text, safetensors,
        skops: no pickles), after its content hash matched the one recorded in PostgreSQL at registration. The
        model's MLflow code is never run here, so whoever can write to the registry cannot run code this way."""
        import hmac
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="pmls-registered-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}", dst_path=tmp))
            found = [p.parent for p in local.rglob("meta.json") if (p.parent / "preprocessor.json").is_file()]
            if len(found) != 1:
                raise ValueError("the registered model holds no pmls bundle")
            digest = bundle_digest(found[0])
            if not hmac.compare_digest(digest, expected_sha256):
                raise ValueError(
                    f"its bundle's content hash {digest[:12]}... is not the {expected_sha256[:12]}... recorded "
                    "at registration, so it was not loaded"
                )
            return load_bundle(found[0])

    def alias_version(self, model_name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(model_name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, alias, version)

    def delete_alias(self, model_name: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(model_name, alias)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def smoke_set(self, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """The held-out rows logged at registration and the registered model's predictions of them (None for a
        version registered before smoke sets were recorded)."""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="pmls-smoke-") as tmp:
            try:
                local = Path(
                    mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SMOKE_DIR, dst_path=tmp)
                )
            except (MlflowException, OSError):
                return None
            rows, predictions = local / "rows.parquet", local / "predictions.parquet"
            if not (rows.is_file() and predictions.is_file()):
                return None
            return pd.read_parquet(rows), pd.read_parquet(predictions)


def _log_smoke_set(bundle: Any, sample: pd.DataFrame) -> None:
    """Held-out test rows and this model's predictions of them: a promotion's smoke test predicts them again
    with what the target serves and expects the same."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="pmls-smoke-") as tmp:
        sample.to_parquet(Path(tmp) / "rows.parquet")
        bundle.predict(sample).to_parquet(Path(tmp) / "predictions.parquet")
        mlflow.log_artifacts(tmp, SMOKE_DIR)


def _log_run(request: TrainingRequest, splits: SplitRef, trained: TrainedModelRef) -> None:
    cfg = request.dataset_config
    mlflow.log_params(
        {
            "model_type": request.model_type.value,
            "training_mode": request.training_mode.value,
            "task": trained.task.value,
            "target": cfg.target,
            "source": cfg.source[:250],
            "training_period": cfg.training_period,
            "validation_period": cfg.validation_period,
            "test_period": cfg.test_period,
            "best_iteration": trained.best_iteration,
            "feature_selection": cfg.feature_selection,
            "class_balancing": cfg.class_balancing,
            "data_augmentation": cfg.data_augmentation,
            "cv_strategy": request.validation_config.cv_strategy,
            "metric": trained.primary_metric,
            "fitted_on": "+".join(trained.fitted_on),
            "test_metrics_fitted_on": "+".join(trained.evaluated_with),
            **{f"param.{k}": v for k, v in trained.params.items()},
        }
    )
    # The test_* metrics come from a model that never saw the test period; the model logged may have.
    mlflow.set_tag("pmls.fitted_on", "+".join(trained.fitted_on))
    metrics = trained.metrics
    values = {f"validation_{k}": v for k, v in metrics.validation_metrics.items()}
    values |= {f"test_{k}": v for k, v in metrics.test_metrics.items()}
    for key in ("training_accuracy", "validation_accuracy", "training_loss", "validation_loss"):
        if getattr(metrics, key) is not None:
            values[key] = getattr(metrics, key)
    values |= {"model_size_mb": trained.model_size_mb, "train_seconds": trained.duration_seconds}
    if trained.latency_ms_per_row is not None:
        values["latency_ms_per_row"] = trained.latency_ms_per_row
    if trained.cv is not None and trained.cv.scores:
        values |= {"cv_mean": trained.cv.mean, "cv_std": trained.cv.std}
    mlflow.log_metrics(values)
    if trained.cv is not None:
        for fold, value in enumerate(trained.cv.scores):
            mlflow.log_metric(f"cv_{trained.cv.metric}", value, step=fold)
    mlflow.log_dict({"kept": trained.features, "dropped": trained.dropped_features}, "features.json")
    mlflow.log_text(splits.description, "split.txt")
    mlflow.log_dict(metrics.feature_importance, "feature_importance.json")
    if metrics.search_allocation:
        mlflow.log_dict(metrics.search_allocation, "search_allocation.json")
    mlflow.log_text(json.dumps(request.model_dump(mode="json"), indent=2), "training_request.json")


def _log_comparison(comparison: Any) -> None:
    if comparison is None:
        return
    mlflow.set_tag("pmls.champion", comparison.champion_model_id or "none (first version)")
    mlflow.set_tag("pmls.champion_note", comparison.note[:5000])
    if comparison.performance_improvement is not None:
        mlflow.log_metrics(
            {
                "performance_improvement": comparison.performance_improvement,
                f"champion_test_{comparison.metric}": comparison.champion_score,
            }
        )

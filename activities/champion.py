"""Champion comparison: the lineage's current model scored on this job's test period, on the trials queue."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
from temporalio import activity

from activities.data import DataActivities
from pmls.contracts.ids import model_id
from pmls.contracts.workflow import ChampionComparison, CompareChampionInput
from pmls.ml.metrics import HIGHER_IS_BETTER, compute_metrics
from pmls.storage.registry import ModelRegistry

log = logging.getLogger("pmls.champion")


class ChampionActivities:
    def __init__(self, registry: ModelRegistry, data: DataActivities) -> None:
        self.registry = registry
        self.data = data

    @activity.defn(name="compare_champion")
    def compare_champion(self, inp: CompareChampionInput) -> ChampionComparison:
        """Score the champion (alias ``production``, else the latest version) exactly as the new model."""
        activity.heartbeat("loading the champion")
        name, metric = inp.request.lineage, inp.trained.primary_metric
        new = inp.trained.metrics.test_metrics.get(metric)
        base = ChampionComparison(metric=metric, new_score=new)
        champion = self.registry.champion(name, inp.request.deployment_config.alias, exclude_job=inp.job_id)
        if champion is None:
            return base.model_copy(update={"first_version": True, "note": f"first version of lineage {name!r}"})
        champ_id = model_id(name, champion.tags.get("pmls.model_type", "model"), str(champion.version))
        base = base.model_copy(update={"champion_model_id": champ_id, "champion_version": str(champion.version)})
        try:
            score = self._score(inp, f"models:/{name}/{champion.version}")
        except Exception as exc:  # noqa: BLE001 - an incomparable champion must not fail the new model
            log.warning("champion %s not comparable: %s", champ_id, exc)
            return base.model_copy(update={"note": f"champion {champ_id} could not be scored: {exc}"[:1000]})
        better = (new - score) if metric in HIGHER_IS_BETTER else (score - new)
        return base.model_copy(update={
            "champion_score": score, "performance_improvement": float(better),
            "note": f"{metric}: new {new:.4f} vs champion {champ_id} {score:.4f} on the same test period"})

    def _score(self, inp: CompareChampionInput, uri: str) -> float:
        import mlflow

        prepared = self.data.prepared.get(inp.prepared.uri)
        test = pl.read_parquet(inp.splits.test.uri)
        out = mlflow.pyfunc.load_model(uri).predict(test.drop(inp.request.dataset_config.target).to_pandas())
        if prepared.classes is None:
            scores = out["prediction"].to_numpy(dtype=np.float64)
        else:
            missing = [c for c in prepared.classes if f"proba_{c}" not in out.columns]
            if missing:
                raise ValueError(f"it does not predict the classes {missing}")
            scores = np.column_stack([out[f"proba_{c}"].to_numpy(dtype=np.float64) for c in prepared.classes])
        value = compute_metrics(prepared.task, prepared.y["test"], scores).get(inp.trained.primary_metric)
        if value is None:
            raise ValueError(f"{inp.trained.primary_metric} is undefined on the test period")
        return float(value)

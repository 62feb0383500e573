"""Champion comparison: the lineage's current model scored on this job's test period, on the trials queue."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
from temporalio import activity

from activities.workspace import Workspace
from pmls.contracts import activities as contract
from pmls.contracts.ids import model_id
from pmls.contracts.workflow import ChampionComparison, CompareChampionInput
from pmls.ml.metrics import HIGHER_IS_BETTER, compute_metrics
from pmls.storage.digests import RecordedDigests
from pmls.storage.registry import ModelRegistry

log = logging.getLogger("pmls.champion")
MIN_COMPARISON_ROWS = 10  # fewer rows give a comparison that is mostly noise


class ChampionActivities(contract.Champion):
    def __init__(self, registry: ModelRegistry, workspace: Workspace, digests: RecordedDigests) -> None:
        self.registry = registry
        self.ws = workspace
        self.digests = digests

    @activity.defn
    def compare_champion(self, inp: CompareChampionInput) -> ChampionComparison:
        """Score the champion (alias ``production``, else the latest version) exactly as the new model, on the
        test rows neither was fitted on."""
        activity.heartbeat("loading the champion")
        name, metric = inp.request.lineage, inp.trained.primary_metric
        new = inp.trained.metrics.test_metrics.get(metric)
        base = ChampionComparison(metric=metric, new_score=new)
        champion = self.registry.champion(name, inp.request.deployment_config.alias, exclude_job=inp.job_id)
        if champion is None:
            return base.model_copy(
                update={"first_version": True, "note": f"first version of lineage {name!r}"}
            )
        champ_id = model_id(name, champion.tags.get("pmls.model_type", "model"), str(champion.version))
        base = base.model_copy(
            update={"champion_model_id": champ_id, "champion_version": str(champion.version)}
        )
        expected = self.digests.of(champ_id)
        if expected is None:
            note = (
                f"champion {champ_id} has no bundle hash recorded by pmls (registered outside it, or before "
                "hashes were recorded), so it is not loaded: not compared"
            )
            return base.model_copy(update={"note": note})
        try:
            new, score, note = self._scores(
                inp, self.registry.load_checked(name, str(champion.version), expected)
            )
        except Exception as exc:  # noqa: BLE001 - an incomparable champion must not fail the new model
            log.warning("champion %s not comparable: %s", champ_id, exc)
            return base.model_copy(update={"note": f"champion {champ_id} could not be scored: {exc}"[:1000]})
        better = (new - score) if metric in HIGHER_IS_BETTER else (score - new)
        return base.model_copy(
            update={
                "new_score": new,
                "champion_score": score,
                "performance_improvement": float(better),
                "note": f"{metric}: new {new:.4f} vs champion {champ_id} {score:.4f} {note}",
            }
        )

    def _scores(self, inp: CompareChampionInput, bundle) -> tuple[float, float, str]:
        """(new, champion, how): both scored on the test rows the champion was not fitted on either (the new
        model's figures come from its fit that never saw the test period)."""
        prepared = self.ws.prepared(inp.prepared.uri)
        test = pl.read_parquet(inp.splits.test.uri)
        unseen = bundle.unseen(test)
        how = "on the same test period"
        if unseen is not None and not unseen.all():
            kept = int(unseen.sum())
            if kept < MIN_COMPARISON_ROWS:
                raise ValueError(
                    f"it was fitted on {test.height - kept} of this job's {test.height} test rows, "
                    f"which leaves {kept} rows to compare on"
                )
            how = f"on the {kept} of {test.height} test rows the champion was not fitted on"
            test = test.filter(pl.Series(unseen))
        rows = np.ones(prepared.y["test"].shape[0], dtype=bool) if unseen is None else unseen
        out = bundle.predict(test.drop(inp.request.dataset_config.target).to_pandas())
        champion = self._metric(inp, prepared, rows, _scores_of(out, prepared.classes))
        if rows.all() or not inp.trained.test_scores_uri:
            new = inp.trained.metrics.test_metrics[inp.trained.primary_metric]
            if not rows.all():
                raise ValueError(
                    "the new model's test predictions were not kept, so it cannot be scored on "
                    "the rows the champion did not see"
                )
        else:
            new = self._metric(
                inp, prepared, rows, np.load(inp.trained.test_scores_uri, allow_pickle=False)[rows]
            )
        return new, champion, how

    @staticmethod
    def _metric(inp: CompareChampionInput, prepared, rows: np.ndarray, scores: np.ndarray) -> float:
        value = compute_metrics(prepared.task, prepared.y["test"][rows], scores).get(
            inp.trained.primary_metric
        )
        if value is None:
            raise ValueError(f"{inp.trained.primary_metric} is undefined on the rows compared")
        return float(value)


def _scores_of(out, classes: list | None) -> np.ndarray:
    if classes is None:
        return out["prediction"].to_numpy(dtype=np.float64)
    missing = [c for c in classes if f"proba_{c}" not in out.columns]
    if missing:
        raise ValueError(f"it does not predict the classes {missing}")
    return np.column_stack([out[f"proba_{c}"].to_numpy(dtype=np.float64) for c in classes])

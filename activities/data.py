"""Data activities on the trials queue: read the source, split it, prepare the features (once per job)."""

from __future__ import annotations

from temporalio import activity

from activities.errors import input_errors
from activities.workspace import SPLIT_FILES, Workspace
from pmls.contracts import activities as contract
from pmls.contracts.workflow import (
    DatasetRef,
    LoadDatasetInput,
    PreparedRef,
    PrepareInput,
    SplitDatasetInput,
    SplitRef,
)
from pmls.ml.data import prepare_splits
from pmls.ml.prepared import higher_is_better, prepare
from pmls.ml.sources import FileAccess
from pmls.storage.sources import Connections, load_source


class DataActivities(contract.Data):
    def __init__(
        self, workspace: Workspace, access: FileAccess, connections: Connections | None = None
    ) -> None:
        self.ws = workspace
        self.access = access  # the data roots: file and DuckDB sources read nothing else
        self.connections = connections or Connections()  # the operator's named databases, the only ones

    @activity.defn
    def load_dataset(self, inp: LoadDatasetInput) -> DatasetRef:
        """Read the source (Polars), keep a snapshot of exactly what this job trains on."""
        activity.heartbeat("loading")
        with input_errors():
            frame = load_source(inp.dataset_config.source, self.access, self.connections)
        return self.ws.write_frame(frame, self.ws.job_dir(inp.job_id) / "dataset.parquet")

    @activity.defn
    def split_dataset(self, inp: SplitDatasetInput) -> SplitRef:
        """Split once per job; every later stage uses these three frames."""
        activity.heartbeat("splitting")
        with input_errors():
            splits = prepare_splits(self.ws.frame(inp.dataset), inp.dataset_config, seed=inp.seed)
        out = self.ws.job_dir(inp.job_id)
        return SplitRef(
            train=self.ws.write_frame(splits.train, out / SPLIT_FILES["train"]),
            validation=self.ws.write_frame(splits.validation, out / SPLIT_FILES["validation"]),
            test=self.ws.write_frame(splits.test, out / SPLIT_FILES["test"]),
            task=splits.task,
            classes=splits.classes,
            description=splits.description,
        )

    @activity.defn
    def prepare_features(self, inp: PrepareInput) -> PreparedRef:
        """Fit the preprocessing on the training period, plan the CV folds, select features — once per job."""
        activity.heartbeat("preparing")
        splits = self.ws.splits(inp.splits)
        with input_errors():
            prepared = prepare(splits, inp.dataset_config, inp.validation_config, seed=inp.seed)
        path = prepared.save(self.ws.job_dir(inp.job_id) / "prepared")
        self.ws.keep_prepared(str(path), prepared)
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

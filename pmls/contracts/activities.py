"""The activities the workflows call, as interfaces: one class per group, one stub per activity.

A workflow calls an activity by its stub (``workflow.execute_activity_method(Training.fit_final, ...)``):
the name and the result type come from the stub, so a typo fails at import, not in a running job. The
implementation in ``activities/`` subclasses the group and overrides each stub with ``@activity.defn``; the
activity's name is the method's name, here and there. A worker registers whole implementations, and
:func:`activities_of` refuses one that leaves a stub of its group unimplemented.

The groups are split by queue: :data:`ON_TRIALS_QUEUE` run CPU work in the trials workers' thread pools,
:data:`ON_TRAINING_QUEUE` light I/O beside the workflows.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from temporalio import activity

from pmls.contracts.deployment import (
    AliasMove,
    DeployInput,
    MoveAliasInput,
    RecordInput,
    RollbackCommand,
    RollbackTarget,
    SmokeResult,
    SmokeTestInput,
)
from pmls.contracts.models import DeploymentResult, ModelArtifact
from pmls.contracts.tuning import (
    CollectInput,
    CreateStudyInput,
    EndRunInput,
    LogTrialsInput,
    StartRunInput,
    StudySpec,
    TrialBatch,
    TrialBatchInput,
    TrialResult,
)
from pmls.contracts.workflow import (
    BuildEnsembleInput,
    ChampionComparison,
    CompareChampionInput,
    CompleteJobInput,
    CrossValidateInput,
    CVScore,
    DatasetRef,
    FitFinalInput,
    LoadDatasetInput,
    PreparedRef,
    PrepareInput,
    Progress,
    RegisteredModel,
    RegisterModelInput,
    SplitDatasetInput,
    SplitRef,
    TrainedModelRef,
    TurnInput,
)


class FailureKind(StrEnum):
    """What an activity's failure means for the next attempt (the ``type`` of the ApplicationError it raises;
    decided once, by ``activities.supervision``)."""

    UNAVAILABLE = (
        "Unavailable"  # a server or source could not be reached: retried until the outage budget ends
    )
    DETERMINISTIC = "Deterministic"  # the same attempt fails the same way: never retried
    FAILED = "Failed"  # anything else, or a vanished attempt: retried a few times


# -- the trials queue: CPU work, sync, in a thread pool ---------------------------------------------------


class Data:
    """Read the source, split it, prepare the features: once per job."""

    @activity.defn
    def load_dataset(self, inp: LoadDatasetInput) -> DatasetRef:
        raise NotImplementedError

    @activity.defn
    def split_dataset(self, inp: SplitDatasetInput) -> SplitRef:
        raise NotImplementedError

    @activity.defn
    def prepare_features(self, inp: PrepareInput) -> PreparedRef:
        raise NotImplementedError


class Training:
    """Cross-validate a configuration, fit the final model, build an ensemble."""

    @activity.defn
    def cross_validate(self, inp: CrossValidateInput) -> CVScore:
        raise NotImplementedError

    @activity.defn
    def fit_final(self, inp: FitFinalInput) -> TrainedModelRef:
        raise NotImplementedError

    @activity.defn
    def build_ensemble(self, inp: BuildEnsembleInput) -> TrainedModelRef:
        raise NotImplementedError


class Trials:
    """A batch of a search's trials, back to back in one slot."""

    @activity.defn
    def run_trials(self, inp: TrialBatchInput) -> TrialBatch:
        raise NotImplementedError


class Champion:
    """The lineage's current model against the new one, on rows neither was fitted on."""

    @activity.defn
    def compare_champion(self, inp: CompareChampionInput) -> ChampionComparison:
        raise NotImplementedError


# -- the training queue: light I/O, async, beside the workflows -------------------------------------------


class Jobs:
    """The job's row and cache entry, its registration and its completion event."""

    @activity.defn
    async def record_job_status(self, update: Progress) -> None:
        raise NotImplementedError

    @activity.defn
    async def register_model(self, inp: RegisterModelInput) -> RegisteredModel:
        raise NotImplementedError

    @activity.defn
    async def record_artifact(self, inp: CompleteJobInput) -> ModelArtifact:
        """The artifact row before the deploy stage (which judges and smoke-tests it); the job stays RUNNING."""
        raise NotImplementedError

    @activity.defn
    async def complete_job(self, inp: CompleteJobInput) -> ModelArtifact:
        raise NotImplementedError

    @activity.defn
    async def wait_for_turn(self, inp: TurnInput) -> None:
        raise NotImplementedError

    @activity.defn
    async def cancel_execution(self, job_id: str) -> None:
        """Ask Temporal to cancel the job's workflow (a workflow cannot cancel itself)."""
        raise NotImplementedError


class Studies:
    """A search's study and its MLflow runs (a trial's row is written by the slot that tells it)."""

    @activity.defn
    async def create_study(self, inp: CreateStudyInput) -> StudySpec:
        raise NotImplementedError

    @activity.defn
    async def start_mlflow_run(self, inp: StartRunInput) -> str:
        raise NotImplementedError

    @activity.defn
    async def end_mlflow_run(self, inp: EndRunInput) -> None:
        raise NotImplementedError

    @activity.defn
    async def collect_trials(self, inp: CollectInput) -> list[TrialResult]:
        raise NotImplementedError

    @activity.defn
    async def log_trials(self, inp: LogTrialsInput) -> None:
        raise NotImplementedError


class Deployments:
    """A lineage's alias moves and their undoing, the smoke test, the history with its events; and a training
    job's deploy stage, which asks the lineage workflow."""

    @activity.defn
    async def move_alias(self, inp: MoveAliasInput) -> AliasMove:
        raise NotImplementedError

    @activity.defn
    async def restore_alias(self, move: AliasMove) -> None:
        raise NotImplementedError

    @activity.defn
    async def smoke_test(self, inp: SmokeTestInput) -> SmokeResult:
        raise NotImplementedError

    @activity.defn
    async def rollback_target(self, cmd: RollbackCommand) -> RollbackTarget:
        raise NotImplementedError

    @activity.defn
    async def record(self, inp: RecordInput) -> None:
        raise NotImplementedError

    @activity.defn
    async def deploy_model(self, inp: DeployInput) -> DeploymentResult:
        raise NotImplementedError


ON_TRIALS_QUEUE: tuple[type, ...] = (Data, Training, Trials, Champion)
ON_TRAINING_QUEUE: tuple[type, ...] = (Jobs, Studies, Deployments)


def stubs(group: type) -> dict[str, Callable]:
    """The activity stubs a group declares, by activity name."""
    return {name: fn for name, fn in vars(group).items() if _definition(fn) is not None}


def activities_of(groups: tuple[type, ...], *implementations: Any) -> list[Callable]:
    """The bound activity methods of ``implementations``, which must implement every group in ``groups``
    (each stub overridden by an ``@activity.defn`` method of the same name) and nothing else."""
    methods: list[Callable] = []
    covered: set[type] = set()
    for impl in implementations:
        mine = [g for g in groups if isinstance(impl, g)]
        if not mine:
            raise TypeError(f"{type(impl).__name__} implements none of {[g.__name__ for g in groups]}")
        for group in mine:
            for name in stubs(group):
                method = getattr(impl, name)
                definition = _definition(method)
                if getattr(type(impl), name) is vars(group)[name] or definition is None:
                    raise TypeError(
                        f"{type(impl).__name__}.{name} does not implement {group.__name__}.{name}"
                    )
                if definition.name != name:
                    raise TypeError(f"{type(impl).__name__}.{name} is registered as {definition.name!r}")
                methods.append(method)
        declared = {name for g in mine for name in stubs(g)}
        extra = sorted(
            name
            for name in dir(type(impl))
            if not name.startswith("__")
            and name not in declared
            and _definition(getattr(impl, name)) is not None
        )
        if extra:
            raise TypeError(f"{type(impl).__name__} defines activities no group declares: {', '.join(extra)}")
        covered.update(mine)
    missing = [g.__name__ for g in groups if g not in covered]
    if missing:
        raise TypeError(f"no implementation of {', '.join(missing)}")
    return methods


def _definition(fn: Callable) -> Any:
    # The SDK keeps an activity's definition on the function; reading it is how we check a registration.
    return getattr(fn, "__temporal_activity_definition", None)

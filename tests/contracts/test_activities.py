"""Activity references: every stub a workflow can call is implemented, on the queue whose workers register it,
and a worker refuses an implementation that leaves one out or adds one no contract declares."""

from __future__ import annotations

import pytest
from temporalio import activity

from activities.champion import ChampionActivities
from activities.data import DataActivities
from activities.deployment import DeploymentActivities
from activities.jobs import JobActivities
from activities.training import TrainingActivities
from activities.tuning import StudyActivities, TrialActivities
from activities.workspace import Workspace
from pmls.contracts import activities as contract
from pmls.contracts.activities import ON_TRAINING_QUEUE, ON_TRIALS_QUEUE, activities_of, stubs
from pmls.ml.sources import FileAccess
from pmls.settings import Settings


def _names(methods) -> list[str]:
    return sorted(m.__name__ for m in methods)


def test_the_workers_compositions_implement_every_stub(tmp_path):
    ws = Workspace(str(tmp_path))
    trials = activities_of(
        ON_TRIALS_QUEUE,
        DataActivities(ws, FileAccess.anywhere()),
        TrainingActivities(ws),
        TrialActivities(ws, None, None),
        ChampionActivities(None, ws, None),
    )
    training = activities_of(
        ON_TRAINING_QUEUE,
        JobActivities(None, None, None),
        StudyActivities(None, None, None),
        DeploymentActivities(None, None, None, None, Settings()),
    )
    declared = [name for group in (*ON_TRIALS_QUEUE, *ON_TRAINING_QUEUE) for name in stubs(group)]
    assert len(declared) == len(set(declared)) == 25, "an activity name declared twice, or one lost"
    assert _names(trials) + _names(training) == sorted(stubs_of(ON_TRIALS_QUEUE)) + sorted(
        stubs_of(ON_TRAINING_QUEUE)
    )
    # The stub gives a workflow the result type it decodes into.
    assert contract.Training.fit_final.__annotations__["return"] == "TrainedModelRef"


def stubs_of(groups) -> list[str]:
    return [name for group in groups for name in stubs(group)]


def test_a_stub_left_unimplemented_is_refused(tmp_path):
    class Partial(contract.Data):
        @activity.defn
        def load_dataset(self, inp):  # split_dataset and prepare_features are left to the stub
            return None

    with pytest.raises(TypeError, match="Partial.split_dataset does not implement Data.split_dataset"):
        activities_of((contract.Data,), Partial())


def test_an_undeclared_activity_and_a_missing_group_are_refused(tmp_path):
    class Extra(DataActivities):
        @activity.defn
        def sneak_in(self, inp) -> None:
            return None

    with pytest.raises(TypeError, match="no group declares: sneak_in"):
        activities_of((contract.Data,), Extra(Workspace(str(tmp_path)), FileAccess.anywhere()))
    with pytest.raises(TypeError, match="no implementation of Training"):
        activities_of(
            (contract.Data, contract.Training),
            DataActivities(Workspace(str(tmp_path)), FileAccess.anywhere()),
        )


def test_a_stub_sent_to_the_wrong_queue_is_refused_before_it_is_scheduled():
    """io() and cpu() route by the stub's group: a training-queue activity on the trials queue (no worker there
    registers it) would otherwise wait out its timeout."""
    from workflows.calls import _check_queue

    _check_queue(contract.Training.fit_final, ON_TRIALS_QUEUE, "trials")
    _check_queue(contract.Jobs.record_job_status, ON_TRAINING_QUEUE, "training")
    with pytest.raises(TypeError, match="Jobs.record_job_status does not run on the trials queue"):
        _check_queue(contract.Jobs.record_job_status, ON_TRIALS_QUEUE, "trials")
    with pytest.raises(TypeError, match="Data.load_dataset does not run on the training queue"):
        _check_queue(contract.Data.load_dataset, ON_TRAINING_QUEUE, "training")

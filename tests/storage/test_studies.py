"""The study store on the real PostgreSQL: a repeated ask creates nothing new, concurrent asks share no trial,
the budget counts each trial once, and a batch that never returned is settled."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from pmls.contracts.enums import ModelType
from pmls.contracts.tuning import StudySpec, TrialResult
from pmls.ml.search import merge_space, portfolio
from pmls.storage.studies import StudyStore
from tests.helpers import unique


@pytest.fixture()
def store(settings) -> StudyStore:
    return StudyStore(settings.database.optuna_url)


def _spec(limit: int, *, with_portfolio: bool = False) -> StudySpec:
    space, fixed = merge_space(ModelType.LIGHTGBM, {})
    return StudySpec(
        study=unique("study"),
        family=ModelType.LIGHTGBM,
        direction="minimize",
        method="tpe",
        pruner="none",
        folds=3,
        seed=7,
        space=space,
        fixed=fixed,
        limit=limit,
        portfolio=portfolio(ModelType.LIGHTGBM, space) if with_portfolio else [],
    )


def test_an_ask_repeated_with_its_key_returns_the_same_trials_and_counts_them_once(store):
    spec = _spec(limit=3)
    store.create(spec)
    first = store.ask(spec, n=2, key="trials-1/0")

    assert [t.number for t in first] == [0, 1]
    assert all(set(t.params) == set(spec.space) for t in first)
    again = store.ask(spec, n=2, key="trials-1/0")  # a retried activity: nothing new is created
    assert [(t.number, t.trial_id, t.params) for t in again] == [
        (t.number, t.trial_id, t.params) for t in first
    ]
    assert all(t.claimed for t in again) and not any(t.claimed for t in first)
    assert [t.number for t in store.ask(spec, n=5, key="trials-2/0")] == [2]  # one more fits the budget
    assert store.ask(spec, n=1, key="trials-3/0") == []


def test_concurrent_askers_share_no_trial_and_take_each_portfolio_configuration_once(store):
    spec = _spec(limit=12, with_portfolio=True)
    store.create(spec)
    with ThreadPoolExecutor(max_workers=4) as pool:  # four trial slots asking at once
        asked = [
            t
            for batch in pool.map(lambda k: store.ask(spec, n=1, key=f"trials-{k}/0"), range(12))
            for t in batch
        ]

    assert sorted(t.number for t in asked) == list(range(12))
    by_number = {t.number: t.params for t in asked}
    for number, configuration in enumerate(spec.portfolio):
        assert {k: by_number[number][k] for k in configuration} == pytest.approx(configuration)
    assert store.ask(spec, n=1, key="trials-99/0") == []


def test_a_batch_that_never_returned_is_settled_from_the_study(store):
    spec = _spec(limit=5)
    store.create(spec)
    told, running = store.ask(spec, n=1, key="trials-1/0")[0], store.ask(spec, n=1, key="trials-1/1")[0]
    store.tell(
        spec,
        told.trial_id,
        TrialResult(
            number=told.number, trial_id=told.trial_id, state="COMPLETE", params=told.params, score=0.5
        ),
    )
    store.ask(spec, n=1, key="trials-2/0")  # another batch's trial: not this one's to settle

    settled = store.collect(spec, "trials-1", state="CANCELLED", error="stopped")

    assert [(r.number, r.state, r.score) for r in settled] == [(0, "COMPLETE", 0.5), (1, "CANCELLED", None)]
    assert store.finished(running.trial_id).state == "CANCELLED"
    # A cancelled trial gives its share of the budget back: 5 - 2 counted = 3 more fit.
    assert len(store.ask(spec, n=5, key="trials-3/0")) == 3


def test_the_median_pruner_stops_a_trial_behind_the_finished_ones_in_any_worker(store, settings):
    spec = _spec(limit=20).model_copy(update={"pruner": "median"})
    store.create(spec)
    # Another trials worker, with its own copy of the study: it sees the first worker's trials while they run,
    # and its later decisions must see them finish.
    other = StudyStore(settings.database.optuna_url)
    behind = other.ask(spec, n=1, key="trials-2/0")[0]
    running = [store.ask(spec, n=1, key=f"trials-1/{i}")[0] for i in range(10)]
    assert (
        other.report(spec, behind.trial_id, 0.9, 0) is False
    )  # nothing finished yet: nothing to compare with
    for trial in running:  # the median pruner waits for ten finished trials
        assert not any(store.report(spec, trial.trial_id, 0.5, step) for step in range(3))
        store.tell(
            spec,
            trial.trial_id,
            TrialResult(
                number=trial.number,
                trial_id=trial.trial_id,
                params=trial.params,
                state="COMPLETE",
                score=0.5,
                fold_scores=[0.5] * 3,
                duration_seconds=1.0,
            ),
        )
    late = other.ask(spec, n=1, key="trials-2/2")[0]
    assert other.report(spec, late.trial_id, 0.95, 0) is False  # one fold never decides, however far behind
    assert other.report(spec, behind.trial_id, 0.9, 1) is True  # minimised: far behind the median 0.5
    ahead = other.ask(spec, n=1, key="trials-2/1")[0]
    assert other.report(spec, ahead.trial_id, 0.1, 0) is False
    assert other.report(spec, ahead.trial_id, 0.2, 1) is False
    # Every intermediate score is stored, where Optuna's own tools (and a retried batch) read it.
    assert store.storage.get_trial(behind.trial_id).intermediate_values == {0: 0.9, 1: 0.9}
    assert store.storage.get_trial(ahead.trial_id).intermediate_values == {0: 0.1, 1: 0.2}

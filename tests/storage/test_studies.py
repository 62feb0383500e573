"""The study store on the real PostgreSQL: asks survive being interrupted half-way."""

from __future__ import annotations

import optuna
import pytest

from pmls.contracts.enums import ModelType
from pmls.contracts.tuning import StudySpec
from pmls.ml.search import distributions, merge_space, portfolio
from pmls.storage.studies import StudyStore
from tests.helpers import unique


@pytest.fixture()
def store(settings) -> StudyStore:
    return StudyStore(settings.database.optuna_url)


def _spec(limit: int, *, with_portfolio: bool = False) -> StudySpec:
    space, fixed = merge_space(ModelType.LIGHTGBM, {})
    return StudySpec(study=unique("study"), family=ModelType.LIGHTGBM, direction="minimize", method="tpe",
                     pruner="none", folds=3, seed=7, space=space, fixed=fixed, limit=limit,
                     portfolio=portfolio(ModelType.LIGHTGBM, space) if with_portfolio else [])


def test_a_retried_ask_claims_the_trials_an_interrupted_ask_left_behind(store):
    spec = _spec(limit=4)
    store.create(spec)
    assert [t.number for t in store.ask(spec, n=1, key="ask-1")] == [0]
    # What a database restart in mid-ask leaves: trial 1 created with one parameter of several and no key,
    # trial 2 created with nothing at all.
    study = optuna.load_study(study_name=spec.study, storage=store.storage)
    name, dist = next(iter(distributions(spec.space).items()))
    partial = study.ask({name: dist})
    bare = study.ask()

    retried = store.ask(spec, n=2, key="ask-2")

    assert [t.number for t in retried] == [1, 2]
    assert [t.trial_id for t in retried] == [partial._trial_id, bare._trial_id]
    assert all(set(t.params) == set(spec.space) for t in retried)
    assert retried[0].params[name] == partial.params[name]  # what was stored is kept
    assert store.ask(spec, n=2, key="ask-2") == retried  # asked again: the same trials
    # The budget counts each trial once: one more fits, then none.
    assert [t.number for t in store.ask(spec, n=5, key="ask-3")] == [3]
    assert store.ask(spec, n=1, key="ask-4") == []


def test_an_interrupted_ask_of_a_portfolio_trial_keeps_its_configuration(store):
    spec = _spec(limit=3, with_portfolio=True)
    store.create(spec)
    study = optuna.load_study(study_name=spec.study, storage=store.storage)
    popped = study.ask()  # the enqueued configuration is taken, then the database goes away

    [claimed] = store.ask(spec, n=1, key="ask-1")

    assert claimed.number == popped.number == 0
    expected = {k: v for k, v in spec.portfolio[0].items() if k in spec.space}
    assert {k: claimed.params[k] for k in expected} == pytest.approx(expected)

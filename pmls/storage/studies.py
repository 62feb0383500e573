"""Optuna studies in PostgreSQL (RDBStorage), driven by ask/tell from activities.

The study lives in its own database (Optuna keeps an ``alembic_version`` table of its own). Every
operation is idempotent under activity retries: asks are keyed, tells use ``skip_if_finished``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import text

from pmls.contracts.tuning import StudySpec, TrialResult, TrialSpec
from pmls.ml.search import distributions, grid_size, make_pruner, make_sampler

log = logging.getLogger("pmls.studies")
optuna.logging.set_verbosity(optuna.logging.WARNING)
ASK_KEY = "pmls_ask_key"
RESULT = "pmls_result"


def create_tables(url: str) -> None:
    """Run once from ``pmls migrate``: workers never race to create Optuna's tables."""
    optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": _null_pool()})


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


class StudyStore:
    def __init__(self, url: str) -> None:
        self.storage = optuna.storages.RDBStorage(
            url, skip_table_creation=True,
            engine_kwargs={"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True},
        )
        self._local = threading.Lock()

    def _load(self, spec: StudySpec, *, seed_offset: int = 0) -> optuna.Study:
        # Samplers and pruners are not stored: without them load_study silently uses the defaults.
        return optuna.load_study(
            study_name=spec.study, storage=self.storage,
            sampler=make_sampler(spec.method, spec.seed + seed_offset, spec.space),
            pruner=make_pruner(spec.pruner, spec.folds),
        )

    def create(self, spec: StudySpec) -> None:
        optuna.create_study(study_name=spec.study, storage=self.storage, direction=spec.direction,
                            load_if_exists=True)

    def ask(self, spec: StudySpec, *, n: int, key: str) -> list[TrialSpec]:
        """Up to ``n`` new trials keyed ``key`` (never past the study's limit); asked again with the same key,
        the same trials.

        The sampler works on an in-memory copy of the study read in one query (Optuna's samplers read the
        storage once per parameter: over PostgreSQL that was ~0.2 s an ask at 50 trials, growing with every
        trial), and each new trial is written whole, parameters and key, in one transaction: a restart can
        interrupt an ask only before or after it, never half-way. Asks on one study take turns (an advisory
        lock), so each sees the trials the others started (TPE's constant liar) and the first trials take the
        family's portfolio configurations one each, by trial number.
        """
        with self._turn(spec):
            study_id = self._study_id(spec)
            trials = self.storage.get_all_trials(study_id, deepcopy=False)
            claimed = [t for t in trials if t.user_attrs.get(ASK_KEY) == key]
            if claimed:
                return [_spec(t) for t in sorted(claimed, key=lambda t: t.number)]
            # Trials we cancelled unrun (a budget or a continue-as-new boundary) do not use up the budget.
            started = sum(1 for t in trials if t.state is not TrialState.WAITING and not _cancelled(t))
            limit = min(spec.limit, grid_size(spec.space)) if spec.method == "grid" else spec.limit
            room = max(0, min(n, limit - started))
            if not room:
                return []
            # A sampler rebuilt with the same seed repeats its start-up suggestions: derive it from the count.
            copy = optuna.create_study(direction=spec.direction,
                                       sampler=make_sampler(spec.method, spec.seed + started, spec.space))
            copy.add_trials(trials)
            dists = distributions(spec.space)
            out = []
            for _ in range(room):
                number = len(copy.trials)
                if number < len(spec.portfolio):
                    copy.enqueue_trial(spec.portfolio[number])
                asked = copy.ask(dists)
                frozen = copy._storage.get_trial(asked._trial_id)
                trial_id = self.storage.create_new_trial(study_id, template_trial=optuna.trial.FrozenTrial(
                    number=-1, trial_id=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                    datetime_complete=None, params=frozen.params, distributions=frozen.distributions,
                    user_attrs={ASK_KEY: key}, system_attrs=frozen.system_attrs, intermediate_values={}))
                out.append(TrialSpec(number=self.storage.get_trial_number_from_id(trial_id), trial_id=trial_id,
                                     params=dict(frozen.params)))
            return out

    @contextmanager
    def _turn(self, spec: StudySpec) -> Iterator[None]:
        """One ask at a time per study: per process (a lock, so one pooled connection waits, not all), then
        across processes (a PostgreSQL advisory lock, released by the server if this process dies)."""
        with self._local, self.storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(hashtext(:s))"), {"s": spec.study})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:s))"), {"s": spec.study})
                conn.commit()

    def collect(self, spec: StudySpec, batch: str, *, state: str, error: str) -> list[TrialResult]:
        """Settle the trials of a batch that ended without returning: the stored result of each trial it
        told, and each trial it left running told ``state`` (CANCELLED trials do not use up the budget)."""
        out = []
        for t in self.storage.get_all_trials(self._study_id(spec), deepcopy=False):
            if not str(t.user_attrs.get(ASK_KEY, "")).startswith(f"{batch}/"):
                continue
            if t.state is TrialState.RUNNING:
                result = TrialResult(number=t.number, trial_id=t._trial_id, state=state, params=dict(t.params),
                                     error=error)
                self.tell(spec, t._trial_id, result)
                out.append(result)
            elif RESULT in t.user_attrs:
                out.append(TrialResult.model_validate(t.user_attrs[RESULT]))
        return sorted(out, key=lambda r: r.number)

    def _study_id(self, spec: StudySpec) -> int:
        return self.storage.get_study_id_from_name(spec.study)

    def report(self, spec: StudySpec, trial_id: int, value: float, step: int) -> bool:
        """Report an intermediate score; True when the pruner says stop."""
        trial = optuna.trial.Trial(self._load(spec), trial_id)
        trial.report(value, step)
        return trial.should_prune()

    def finished(self, trial_id: int) -> TrialResult | None:
        """The stored result of a trial already told (an activity retried after it succeeded)."""
        trial = self.storage.get_trial(trial_id)
        if trial.state in (TrialState.RUNNING, TrialState.WAITING) or RESULT not in trial.user_attrs:
            return None
        return TrialResult.model_validate(trial.user_attrs[RESULT])

    def tell(self, spec: StudySpec, trial_id: int, result: TrialResult) -> None:
        """Store the full result on the trial, then tell Optuna (both safe to repeat)."""
        if self.storage.get_trial(trial_id).state.is_finished():
            return
        self.storage.set_trial_user_attr(trial_id, RESULT, result.model_dump(mode="json"))
        study = self._load(spec)
        state = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED}.get(result.state, TrialState.FAIL)
        value: Any = result.score if state is TrialState.COMPLETE else None
        if state is TrialState.PRUNED and result.fold_scores:
            value = None  # the pruner already has the intermediate values
        study.tell(self.storage.get_trial_number_from_id(trial_id), value, state=state, skip_if_finished=True)


def _cancelled(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get(RESULT, {}).get("state") == "CANCELLED"


def _spec(trial: optuna.trial.FrozenTrial) -> TrialSpec:
    return TrialSpec(number=trial.number, trial_id=trial._trial_id, params=dict(trial.params))

"""Optuna studies in PostgreSQL (RDBStorage), driven by ask/tell from activities.

The study lives in its own database (Optuna keeps an ``alembic_version`` table of its own). Every
operation is idempotent under activity retries: asks are keyed, tells use ``skip_if_finished``.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import TrialState

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

    def _load(self, spec: StudySpec, *, seed_offset: int = 0) -> optuna.Study:
        # Samplers and pruners are not stored: without them load_study silently uses the defaults.
        return optuna.load_study(
            study_name=spec.study, storage=self.storage,
            sampler=make_sampler(spec.method, spec.seed + seed_offset, spec.space),
            pruner=make_pruner(spec.pruner, spec.folds),
        )

    def create(self, spec: StudySpec) -> None:
        study = optuna.create_study(study_name=spec.study, storage=self.storage, direction=spec.direction,
                                    load_if_exists=True)
        if not study.user_attrs.get("portfolio_enqueued"):
            for params in spec.portfolio[: spec.limit]:
                study.enqueue_trial(params, skip_if_exists=True)
            study.set_user_attr("portfolio_enqueued", True)

    def ask(self, spec: StudySpec, *, n: int, key: str) -> list[TrialSpec]:
        """Up to ``n`` new trials (never past the study's limit); a retried ask returns the same ones.

        Asking is several writes (create the trial, one per parameter, the key), and the database can go
        away between any two. A retry therefore first claims what an earlier attempt left behind: trials
        with this key, and running trials with no key at all (only an interrupted ask leaves those), whose
        missing parameters it fills in. Otherwise such a trial would hold a number and a share of the budget
        but never run, and the search would end one trial short.
        """
        trials = self.storage.get_all_trials(self._study_id(spec), deepcopy=False)
        claimed = sorted((t for t in trials if t.user_attrs.get(ASK_KEY) == key or _interrupted(t)),
                         key=lambda t: t.number)
        # Trials we cancelled unrun (a budget or a continue-as-new boundary) do not use up the budget.
        started = sum(1 for t in trials if t.state is not TrialState.WAITING and not _cancelled(t))
        limit = min(spec.limit, grid_size(spec.space)) if spec.method == "grid" else spec.limit
        room = max(0, min(n - len(claimed), limit - started))
        # A sampler rebuilt with the same seed repeats its start-up suggestions: derive it from the count
        # before this ask, so that a retry samples as the first attempt did.
        study = self._load(spec, seed_offset=started - sum(1 for t in claimed if not _cancelled(t)))
        dists = distributions(spec.space)
        if claimed:
            study.get_trials(deepcopy=False)  # a fresh study object updates only the trials it has read
        out = [_spec(t) if t.state.is_finished() else _complete(optuna.trial.Trial(study, t._trial_id), dists, key)
               for t in claimed]
        out += [_complete(study.ask(), dists, key) for _ in range(room)]
        return out

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


def _complete(trial: optuna.Trial, dists: dict, key: str) -> TrialSpec:
    """Key the trial first (so that a retry finds it), then suggest each parameter it lacks: one already
    stored comes back as it is, an enqueued portfolio trial gets its fixed values."""
    trial.set_user_attr(ASK_KEY, key)
    params = {name: trial._suggest(name, dist) for name, dist in dists.items()}
    return TrialSpec(number=trial.number, trial_id=trial._trial_id, params=params)


def _interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    """A running trial no ask finished with: every ask keys its trials before anything else runs them."""
    return trial.state is TrialState.RUNNING and ASK_KEY not in trial.user_attrs and RESULT not in trial.user_attrs


def _cancelled(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get(RESULT, {}).get("state") == "CANCELLED"


def _spec(trial: optuna.trial.FrozenTrial) -> TrialSpec:
    return TrialSpec(number=trial.number, trial_id=trial._trial_id, params=dict(trial.params))

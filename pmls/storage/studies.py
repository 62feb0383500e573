"""Optuna studies in PostgreSQL (RDBStorage), driven by ask/tell from activities.

The study lives in its own database (Optuna keeps an ``alembic_version`` table of its own). Every
operation is idempotent under activity retries: asks are keyed, and a tell is refused once the trial is finished.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from sqlalchemy import text

from pmls.contracts.tuning import StudySpec, TrialResult, TrialSpec
from pmls.ml.search import distributions, grid_size, make_pruner, make_sampler

log = logging.getLogger("pmls.studies")
optuna.logging.set_verbosity(optuna.logging.WARNING)
ASK_KEY = "pmls_ask_key"
RESULT = "pmls_result"
MIRRORS = 16  # studies whose in-memory copy a process keeps


def create_tables(url: str) -> None:
    """Run once from ``pmls migrate``: workers never race to create Optuna's tables."""
    optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": _null_pool()})


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


class StudyStore:
    def __init__(self, url: str) -> None:
        self.storage = optuna.storages.RDBStorage(
            url,
            skip_table_creation=True,
            engine_kwargs={"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True},
        )
        self._local = threading.Lock()
        self._mirrors: dict[str, _Mirror] = {}  # most recently used last
        self._ids: dict[str, int] = {}

    def _load(self, spec: StudySpec) -> optuna.Study:
        # Pruners are not stored: without one load_study silently uses the default (asks sample on a _Mirror).
        return optuna.load_study(
            study_name=spec.study,
            storage=self.storage,
            sampler=optuna.samplers.RandomSampler(),
            pruner=make_pruner(spec.pruner, spec.folds),
        )

    def create(self, spec: StudySpec) -> None:
        optuna.create_study(
            study_name=spec.study, storage=self.storage, direction=spec.direction, load_if_exists=True
        )

    def ask(self, spec: StudySpec, *, n: int, key: str) -> list[TrialSpec]:
        """Up to ``n`` new trials keyed ``key`` (never past the study's limit); asked again with the same key,
        the same trials.

        The sampler works on an in-memory copy of the study kept in this process and brought up to date
        with one small read (Optuna's samplers read the storage once per parameter: over PostgreSQL that was
        ~0.1 s an ask at 50 trials, growing with every trial). Each new trial is written whole, parameters
        and key, in one transaction: a restart can interrupt an ask only before or after it, never half-way.
        Asks on one study take turns (an advisory lock), so each sees the trials the others started (TPE's
        constant liar) and the first trials take the family's portfolio configurations one each, by number.
        """
        with self._turn(spec), self._mirror(spec) as mirror:
            return mirror.ask(self.storage, self._study_id(spec), spec, n=n, key=key)

    @contextmanager
    def _mirror(self, spec: StudySpec) -> Iterator[_Mirror]:
        """This process's copy of the study, up to date; call under ``self._local``. Kept as the most recently
        used when the block succeeds; on an error dropped (it may hold a trial the database does not) and read
        anew next time."""
        mirror = self._mirrors.pop(spec.study, None) or _Mirror(spec.direction)
        mirror.refresh(self.storage, self._study_id(spec))
        yield mirror
        self._mirrors[spec.study] = mirror
        while len(self._mirrors) > MIRRORS:
            self._mirrors.pop(next(iter(self._mirrors)))

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
                result = TrialResult(
                    number=t.number, trial_id=t._trial_id, state=state, params=dict(t.params), error=error
                )
                self.tell(spec, t._trial_id, result)
                out.append(result)
            elif RESULT in t.user_attrs:
                out.append(TrialResult.model_validate(t.user_attrs[RESULT]))
        return sorted(out, key=lambda r: r.number)

    def results(self, spec: StudySpec) -> list[TrialResult]:
        """Every trial told so far, by number: the study is where a result is kept."""
        trials = self.storage.get_all_trials(self._study_id(spec), deepcopy=False)
        return [TrialResult.model_validate(t.user_attrs[RESULT]) for t in trials if RESULT in t.user_attrs]

    def _study_id(self, spec: StudySpec) -> int:
        if spec.study not in self._ids:
            self._ids[spec.study] = self.storage.get_study_id_from_name(spec.study)
        return self._ids[spec.study]

    def report(self, spec: StudySpec, trial_id: int, value: float, step: int) -> bool:
        """Report an intermediate score (stored at once); True when the pruner says stop.

        The median pruner compares with the finished trials' intermediate scores only: it decides on this
        process's in-memory copy of the study, brought up to date with one small read (loading the whole study
        from PostgreSQL at every fold grows with the trials). Successive halving and hyperband keep
        their rungs in the storage's trial attributes, shared across processes: they decide on the stored study.
        """
        if spec.pruner != "median":
            trial = optuna.trial.Trial(self._load(spec), trial_id)
            trial.report(value, step)
            return trial.should_prune()
        self.storage.set_trial_intermediate_value(trial_id, step, value)
        with self._local, self._mirror(spec) as mirror:
            memory, mine = mirror.study._storage, mirror.ids[trial_id]
            memory.set_trial_intermediate_value(mine, step, value)
            return bool(make_pruner(spec.pruner, spec.folds).prune(mirror.study, memory.get_trial(mine)))

    def finished(self, trial_id: int) -> TrialResult | None:
        """The stored result of a trial already told (an activity retried after it succeeded)."""
        trial = self.storage.get_trial(trial_id)
        if trial.state in (TrialState.RUNNING, TrialState.WAITING) or RESULT not in trial.user_attrs:
            return None
        return TrialResult.model_validate(trial.user_attrs[RESULT])

    def tell(self, spec: StudySpec, trial_id: int, result: TrialResult) -> None:
        """Store the full result on the trial, then finish it (two writes; both refused once it is finished,
        so a repeated tell changes nothing)."""
        state = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED}.get(
            result.state, TrialState.FAIL
        )
        # A pruned trial keeps its last intermediate value (the CV mean over the folds it ran), as Optuna does.
        values = [float(result.score)] if state is not TrialState.FAIL and result.score is not None else None
        try:
            self.storage.set_trial_user_attr(trial_id, RESULT, result.model_dump(mode="json"))
            self.storage.set_trial_state_values(trial_id, state, values)
        except UpdateFinishedTrialError:
            return


class _Mirror:
    """An in-memory copy of one study, for the sampler and the median pruner: read whole once, then only the
    trials that are new or were unfinished at the last read (finished trials never change). Trial ids grow in
    creation order because asks take turns, so "new" is "id above the last seen"."""

    def __init__(self, direction: str) -> None:
        self.study = optuna.create_study(direction=direction)
        self.ids: dict[int, int] = {}  # database trial id -> in-memory trial id
        self.unfinished: set[int] = set()
        self.last_id = -1

    def refresh(self, storage: optuna.storages.RDBStorage, study_id: int) -> None:
        mem = self.study._storage
        read = storage._get_trials(
            study_id, states=None, included_trial_ids=set(self.unfinished), trial_id_greater_than=self.last_id
        )
        for t in sorted(read, key=lambda t: t._trial_id):
            if t._trial_id not in self.ids:
                self.study.add_trial(t)
                self.ids[t._trial_id] = mem.get_trial_id_from_study_id_trial_number(
                    self.study._study_id, t.number
                )
                self.last_id = max(self.last_id, t._trial_id)
                if not t.state.is_finished():
                    self.unfinished.add(t._trial_id)
            elif t.state.is_finished():
                mine = self.ids[t._trial_id]
                for step, value in t.intermediate_values.items():
                    mem.set_trial_intermediate_value(mine, step, value)
                for name, value in t.user_attrs.items():
                    mem.set_trial_user_attr(mine, name, value)
                mem.set_trial_state_values(mine, t.state, t.values)
                self.unfinished.discard(t._trial_id)

    def ask(
        self, storage: optuna.storages.RDBStorage, study_id: int, spec: StudySpec, *, n: int, key: str
    ) -> list[TrialSpec]:
        trials = self.study.get_trials(deepcopy=False)
        claimed = [t for t in trials if t.user_attrs.get(ASK_KEY) == key]
        if claimed:
            by_mem = {mem: db for db, mem in self.ids.items()}
            return [
                TrialSpec(number=t.number, trial_id=by_mem[t._trial_id], params=dict(t.params), claimed=True)
                for t in sorted(claimed, key=lambda t: t.number)
            ]
        # Trials we cancelled unrun (a budget or a continue-as-new boundary) do not use up the budget.
        started = sum(1 for t in trials if t.state is not TrialState.WAITING and not _cancelled(t))
        limit = min(spec.limit, grid_size(spec.space)) if spec.method == "grid" else spec.limit
        room = max(0, min(n, limit - started))
        # A sampler rebuilt with the same seed repeats its start-up suggestions: derive it from the count.
        self.study.sampler = make_sampler(spec.method, spec.seed + started, spec.space)
        dists = distributions(spec.space)
        out = []
        for _ in range(room):
            number = len(self.study.get_trials(deepcopy=False))
            if number < len(spec.portfolio):
                self.study.enqueue_trial(spec.portfolio[number])
            asked = self.study.ask(dists)
            asked.set_user_attr(ASK_KEY, key)
            frozen = self.study._storage.get_trial(asked._trial_id)
            trial_id = _insert_trial(storage, study_id, frozen)
            self.ids[trial_id] = asked._trial_id
            self.unfinished.add(trial_id)
            self.last_id = max(self.last_id, trial_id)
            out.append(TrialSpec(number=frozen.number, trial_id=trial_id, params=dict(frozen.params)))
        return out


# One statement, one round trip: the trial (numbered as Optuna numbers it, by the trials before it: asks take
# turns, so the count is stable), its parameters and its attributes. Optuna's own create_new_trial issues a
# statement per parameter (compatibility checks), most of an ask's time (README, bench/overhead).
_INSERT_TRIAL = text("""
WITH t AS (
    INSERT INTO trials (number, study_id, state, datetime_start)
    SELECT count(*), :study_id, 'RUNNING', :started FROM trials WHERE study_id = :study_id
    RETURNING trial_id, number
), p AS (
    INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json)
    SELECT t.trial_id, x.name, x.value, x.dist FROM t, jsonb_to_recordset(CAST(:params AS jsonb))
        AS x(name text, value double precision, dist text)
), u AS (
    INSERT INTO trial_user_attributes (trial_id, key, value_json)
    SELECT t.trial_id, x.key, x.value FROM t, jsonb_to_recordset(CAST(:user_attrs AS jsonb)) AS x(key text, value text)
), s AS (
    INSERT INTO trial_system_attributes (trial_id, key, value_json)
    SELECT t.trial_id, x.key, x.value FROM t, jsonb_to_recordset(CAST(:system_attrs AS jsonb)) AS x(key text, value text)
)
SELECT trial_id, number FROM t
""")


def _insert_trial(storage: optuna.storages.RDBStorage, study_id: int, trial: optuna.trial.FrozenTrial) -> int:
    """Write a RUNNING trial with the parameters and attributes of ``trial`` (sampled in memory); its id."""
    from optuna.distributions import distribution_to_json

    params = [
        {
            "name": k,
            "value": trial.distributions[k].to_internal_repr(v),
            "dist": distribution_to_json(trial.distributions[k]),
        }
        for k, v in trial.params.items()
    ]

    def attrs(items: dict) -> str:
        return json.dumps([{"key": k, "value": json.dumps(v)} for k, v in items.items()])

    started = datetime.now(UTC).replace(tzinfo=None)  # Optuna stores naive UTC
    with storage.engine.begin() as conn:
        row = conn.execute(
            _INSERT_TRIAL,
            {
                "study_id": study_id,
                "started": started,
                "params": json.dumps(params),
                "user_attrs": attrs(trial.user_attrs),
                "system_attrs": attrs(trial.system_attrs),
            },
        ).one()
        if row.number != trial.number:
            # Another writer added trials outside the turns: roll back and fail this ask (the retry reads anew).
            raise RuntimeError(
                f"study {study_id}: the new trial would be number {row.number} in the database but "
                f"{trial.number} in memory"
            )
    return int(row.trial_id)


def _cancelled(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get(RESULT, {}).get("state") == "CANCELLED"

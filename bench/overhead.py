"""Benchmark of the service's tuning overhead against a plain in-process ``study.optimize``.

Run from the repository root::

    .venv/bin/python -m bench.overhead                # 50 trials per side, seeds 7-11 (~20 minutes on 2 cores)
    .venv/bin/python -m bench.overhead --seeds 7      # one seed (~7 minutes), with its detailed table
    .venv/bin/python -m bench.overhead --trials 100   # another budget
    .venv/bin/python -m bench.overhead --quick        # a smoke run (~2 minutes): few trials, a smaller data set
    .venv/bin/python -m bench.overhead --markdown     # the tables as Markdown on stdout

Both sides tune LightGBM over the family's default space (``merge_space(ModelType.LIGHTGBM, {})``) with
5-fold CV on the same generated binary data set (``make_classification`` plus a timestamp column,
written to Parquet; 4,000 rows, where a plain trial takes ~1-2 s on 2 cores) and the same
``TrainingRequest`` periods:

* **plain** — in this process: ``load_source`` + ``prepare_splits`` + ``prepare`` exactly as the job's
  activities do, then an in-memory study asked and told one trial after the other (``study.optimize``'s
  schedule) with the same sampler as the service; the objective samples the same distributions and calls
  ``cross_validate`` with 2 threads. No pruning.
* **service** — the embedded stack (Temporal, PostgreSQL, Redis, MLflow, both workers, the API) in a
  temporary ``PMLS_HOME`` on free ports, a fresh one per seed and ``PMLS_TRIAL_SLOTS`` setting (1 and 2; the
  trials worker gives each slot cores / slots threads). A LIGHTGBM request with
  ``optimization_trials = N``, ``pruner: none`` and no portfolio goes in through ``POST
  /api/v1/training/start``; the wall time runs from the POST to the moment the tuning child closed with N
  finished trials (so it includes validation, load, split, preparation, study creation and the batched
  recording of trial rows). The job's total time to COMPLETED (final fit, MLflow registration, publishing)
  is shown separately.

Each seed has its own data set and sampler seed, the same on both sides, and its sides run back to back
(plain, 1 slot, 2 slots, the plain loop over the 2-slot configurations, the plain loop again): this machine's
speed changes in phases of seconds to minutes. The ratio's reference is the mean of both plain walls (A-B-A). With two slots the parallel search evaluates other
configurations than the sequential one, and what they cost differs by seed as much as 2x, so the verdict is
on the sums of the walls over all seeds; the plain loop also re-runs each service side's own
configurations ("equal work").

Per-trial means come from the objective's own timing (plain) and from the trials endpoint's
``experiment_duration_minutes`` (service). The implied orchestration overhead per trial is
``(wall - sum of trial durations / slots) / N``: everything the wall clock saw that was not a trial
running in a slot. Load averages are printed with the figures, since other processes on the machine
skew both sides.

This is a benchmark, not a test: it asserts nothing and prints figures only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from pmls.contracts import DatasetConfig, ModelType, ValidationConfig
from pmls.ml.data import prepare_splits
from pmls.ml.fitting import FitOptions, cross_validate
from pmls.ml.prepared import higher_is_better, prepare
from pmls.ml.search import distributions, make_sampler, merge_space
from pmls.ml.sources import FileAccess, load_source
from pmls.settings import PORT_VARS

FAMILY = ModelType.LIGHTGBM
THREADS = 2
FOLDS = 5
SEEDS = (7, 8, 9, 10, 11)
DEFAULT_ROWS = 4_000
TARGETS = {1: 1.10, 2: 0.65}  # service wall / plain wall, per trial-slot setting
FINISHED = {"COMPLETE", "PRUNED", "FAILED"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
TARGET_COLUMN = "label"
TIME_COLUMN = "event_time"
# Rows are spread evenly over 2024; the periods cover it without overlap.
PERIODS = {
    "training_period": "2024-01-01/2024-08-31",
    "validation_period": "2024-09-01/2024-10-31",
    "test_period": "2024-11-01/2024-12-31",
}


def log(message: str) -> None:
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')} load {load}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def make_dataset(path: Path, rows: int, seed: int) -> Path:
    """A learnable binary task with 20 numeric features and a timestamp column, as Parquet."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=rows, n_features=20, n_informative=8, n_redundant=4, flip_y=0.05, random_state=seed
    )
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 366 * 86_400, size=rows))
    moments = (np.datetime64("2024-01-01T00:00:00") + seconds.astype("timedelta64[s]")).astype(
        "datetime64[us]"
    )
    frame = pl.DataFrame({f"f{i:02d}": X[:, i] for i in range(X.shape[1])}).with_columns(
        pl.Series(TIME_COLUMN, moments), pl.Series(TARGET_COLUMN, y.astype(np.int64))
    )
    frame.write_parquet(path)
    return path


def dataset_config(source: Path) -> DatasetConfig:
    return DatasetConfig(source=str(source), target=TARGET_COLUMN, timestamp_column=TIME_COLUMN, **PERIODS)


def request_body(job_id: str, source: Path, trials: int, seed: int) -> dict:
    return {
        "training_id": job_id,
        "model_type": FAMILY.value,
        "model_name": "bench_overhead",
        "random_seed": seed,
        "dataset_config": {
            "source": str(source),
            "target": TARGET_COLUMN,
            "timestamp_column": TIME_COLUMN,
            **PERIODS,
        },
        "hyperparameter_config": {
            "optimization_method": "tpe",
            "optimization_trials": trials,
            "optimization_timeout": "2h",
            "pruner": "none",
            "portfolio": False,
        },
        "validation_config": {"cv_folds": FOLDS},
    }


# --------------------------------------------------------------------------- results


@dataclass
class Side:
    name: str
    slots: int
    trials: int = 0
    wall: float | None = None  # plain: load + split + prepare + optimize; service: POST -> N trials listed
    durations: list[float] = field(default_factory=list)
    total: float | None = None  # service: POST -> COMPLETED
    extra: dict[str, float] = field(default_factory=dict)
    best: float | None = None
    error: str | None = None
    load: tuple[float, float] | None = None  # 1-minute load average at start and end
    params: list[dict] = field(default_factory=list)  # service: the configurations its trials ran, in order
    again: float | None = None  # plain: the same loop's wall once more, after the services (A-B-A)

    @property
    def reference(self) -> float | None:
        """What the services are compared with: the mean of the plain walls before and after them."""
        if self.wall is None or self.again is None:
            return self.wall
        return (self.wall + self.again) / 2

    @property
    def mean_trial(self) -> float | None:
        return statistics.fmean(self.durations) if self.durations else None

    @property
    def overhead_ms(self) -> float | None:
        """Wall time per trial beyond the trials themselves running in the slots."""
        if self.wall is None or not self.durations or not self.trials:
            return None
        return (self.wall - sum(self.durations) / self.slots) / self.trials * 1000


# --------------------------------------------------------------------------- plain


def run_plain(source: Path, trials: int, seed: int, *, verbose: bool = False) -> tuple[Side, float]:
    """The plain loop: an in-memory study asked and told exactly as the service's one-slot search does.

    Same seeds (preparation, each trial's fit), same sampler built the same way (``make_sampler`` re-seeded
    per ask with the trial count) and the same schedule: ask, cross-validate, tell, one trial after the
    other (the service's trial slot runs its batch of trials just so). Both sides evaluate the very same
    configurations, so the ratio measures orchestration and nothing else.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    side = Side("plain ask/tell loop", slots=1, load=(os.getloadavg()[0], 0.0))
    cfg, vcfg = dataset_config(source), ValidationConfig(cv_folds=FOLDS)
    started = time.perf_counter()
    splits = prepare_splits(load_source(cfg.source, FileAccess.anywhere()), cfg, seed=seed)
    prepared = prepare(splits, cfg, vcfg, seed=seed)
    prep_s = time.perf_counter() - started

    space, fixed = merge_space(FAMILY, {})
    dists = distributions(space)
    log(
        f"plain: prepared in {prep_s:.2f} s ({prepared.plan.description}; rows "
        f"{ {s: len(v) for s, v in prepared.y.items()} }, metric {prepared.metric})"
    )

    # One trial at the family's default parameters first: the per-trial figure the data size was chosen by
    # (it also warms LightGBM up, as the service's worker is warm after its first trial).
    t0 = time.perf_counter()
    cross_validate(prepared, FitOptions.from_config(cfg, FAMILY, dict(fixed), seed=seed, num_threads=THREADS))
    calibration = time.perf_counter() - t0
    log(f"plain: one trial at default parameters, {FOLDS}-fold CV, {THREADS} threads: {calibration:.2f} s")

    study = optuna.create_study(direction="maximize" if higher_is_better(prepared.metric) else "minimize")

    def ask() -> optuna.Trial:
        study.sampler = make_sampler("tpe", seed + len(study.trials), space)
        return study.ask(dists)

    t1 = time.perf_counter()
    for _ in range(trials):
        trial = ask()
        t = time.perf_counter()
        cv = cross_validate(
            prepared,
            FitOptions.from_config(
                cfg, FAMILY, {**fixed, **trial.params}, seed=seed + trial.number, num_threads=THREADS
            ),
        )
        side.durations.append(time.perf_counter() - t)
        study.tell(trial, cv.mean)
        side.params.append(dict(trial.params))
        if verbose:
            shown = ", ".join(f"{k}={v:.3g}" for k, v in trial.params.items())
            log(
                f"plain: trial {trial.number}: {side.durations[-1]:.2f} s, {cv.mean:.4f}, "
                f"rounds {cv.best_iterations} ({shown})"
            )
    optimize_s = time.perf_counter() - t1
    side.trials = len(side.durations)
    side.wall = prep_s + optimize_s
    side.total = side.wall
    side.best = study.best_value
    side.extra = {"prepare_s": prep_s, "optimize_s": optimize_s}
    side.load = (side.load[0], os.getloadavg()[0])
    log(
        f"plain: {side.trials} trials in {optimize_s:.1f} s (+ {prep_s:.2f} s preparation), "
        f"mean trial {side.mean_trial:.2f} s, best {prepared.metric} {side.best:.4f}"
    )
    return side, calibration


def run_plain_same(source: Path, configurations: list[dict], seed: int) -> float:
    """Equal work: the plain sequential loop over exactly the configurations a service run evaluated."""
    cfg, vcfg = dataset_config(source), ValidationConfig(cv_folds=FOLDS)
    started = time.perf_counter()
    prepared = prepare(
        prepare_splits(load_source(cfg.source, FileAccess.anywhere()), cfg, seed=seed), cfg, vcfg, seed=seed
    )
    _, fixed = merge_space(FAMILY, {})
    for number, params in enumerate(configurations):
        cross_validate(
            prepared,
            FitOptions.from_config(cfg, FAMILY, {**fixed, **params}, seed=seed + number, num_threads=THREADS),
        )
    wall = time.perf_counter() - started
    log(f"plain, same {len(configurations)} configurations as the service: {wall:.1f} s")
    return wall


# --------------------------------------------------------------------------- service


def tuning_closed_at(settings, workflow_id: str) -> float | None:
    """When the TuningWorkflow closed (epoch seconds), from Temporal."""
    import asyncio

    from pmls.temporal import connect_temporal

    async def closed() -> float | None:
        client = await connect_temporal(settings)
        info = await client.get_workflow_handle(workflow_id).describe()
        return info.close_time.timestamp() if info.close_time else None

    return asyncio.run(closed())


def run_service(source: Path, trials: int, slots: int, seed: int, *, timeout: float, keep_home: bool) -> Side:
    """A fresh embedded stack with ``slots`` trial slots, warm workers, one job on it."""
    from pmls.settings import Settings
    from pmls.stack import Stack, free_port

    home = Path(tempfile.mkdtemp(prefix=f"pmls-overhead-{slots}slot-"))
    os.environ["PMLS_HOME"] = str(home)
    for var in PORT_VARS:
        os.environ[var] = str(free_port())
    os.environ["PMLS_TRIAL_SLOTS"] = str(slots)
    stack = Stack(Settings())
    side = Side(_service_name(slots), slots=slots)
    t_stack = time.perf_counter()
    try:
        stack.start(progress=lambda msg: log(f"service ({slots} slot): {msg}"))
        stack.wait_for_workers()
        stack_s = time.perf_counter() - t_stack
        log(f"service ({slots} slot): stack up in {stack_s:.1f} s; PMLS_HOME {home}")
        side = run_job(stack, source, trials, slots, seed, timeout=timeout)
        side.extra["stack_start_s"] = stack_s
    except Exception as exc:  # noqa: BLE001 - report it with the logs, go on with the other runs
        side.error = f"{type(exc).__name__}: {exc}"[:3000]
    finally:
        t_stop = time.perf_counter()
        stack.stop()
        log(f"service ({slots} slot): stack stopped in {time.perf_counter() - t_stop:.1f} s")
    if side.error:
        side.error = f"{side.error}\n  logs: {home / 'logs'}"
        log(f"service ({slots} slot) FAILED: {side.error}")
        for logfile in sorted((home / "logs").glob("*.log")):
            tail = logfile.read_text(errors="replace")[-1500:]
            print(f"----- {logfile} (tail)\n{tail}", file=sys.stderr)
    elif not keep_home:
        shutil.rmtree(home, ignore_errors=True)
    return side


def _service_name(slots: int) -> str:
    return f"service, {slots} slot{'s' if slots > 1 else ''}"


def run_job(stack, source: Path, trials: int, slots: int, seed: int, *, timeout: float) -> Side:
    """One job through the API; the wall runs from the POST to the moment the tuning child closed."""
    import httpx

    side = Side(_service_name(slots), slots=slots)
    job_id = f"overhead_{slots}slot_s{seed}_{time.strftime('%H%M%S')}_{os.urandom(2).hex()}"
    from pmls.auth import api_headers

    with httpx.Client(
        base_url=stack.settings.api.base_url, timeout=60, headers=api_headers(stack.settings)
    ) as api:
        side.load = (os.getloadavg()[0], 0.0)
        posted, posted_at = time.perf_counter(), time.time()
        resp = api.post("/api/v1/training/start", json=request_body(job_id, source, trials, seed))
        if resp.status_code not in (200, 202):
            raise RuntimeError(f"POST /training/start answered {resp.status_code}: {resp.text[:2000]}")
        deadline = posted + timeout
        job: dict = {}
        # Poll seldom: every API call costs CPU on the two cores the trials run on.
        while time.perf_counter() < deadline:
            job = api.get(f"/api/v1/training/{job_id}/status").json()
            if job.get("status") in TERMINAL:
                side.total = time.perf_counter() - posted
                break
            time.sleep(2.0)
        side.load = (side.load[0], os.getloadavg()[0])
        listed = [t for t in api.get(f"/api/v1/training/{job_id}/trials").json() if t["state"] in FINISHED]
        # The search's wall time: from the POST to the moment the tuning child closed (its last batch of
        # trial rows recorded), read from Temporal rather than by polling the API during the search.
        closed = tuning_closed_at(stack.settings, f"{job_id}/{FAMILY.value.lower()}")
        if closed is not None and len(listed) >= trials:
            side.wall = closed - posted_at
            log(
                f"service ({slots} slot, seed {seed}): {len(listed)} trials finished and recorded after "
                f"{side.wall:.1f} s"
            )
    side.trials = len(listed)
    side.params = [t["hyperparameters"] for t in sorted(listed, key=lambda t: t["trial_number"])]
    side.durations = [
        t["experiment_duration_minutes"] * 60
        for t in listed
        if t.get("experiment_duration_minutes") is not None
    ]
    scores = [t["performance_score"] for t in listed if t["state"] == "COMPLETE"]
    side.best = max(scores) if scores else None  # roc_auc: higher is better
    status = job.get("status")
    if status != "COMPLETED" or side.wall is None:
        side.error = (
            f"job {job_id}: status {status}, stage {job.get('current_stage')}, "
            f"{side.trials}/{trials} trials listed, error {job.get('error')!r}"
            + ("" if side.total is not None else f" (gave up after {timeout:.0f} s)")
        )
    else:
        log(
            f"service ({slots} slot, seed {seed}): job COMPLETED after {side.total:.1f} s; mean trial "
            f"{side.mean_trial:.2f} s"
        )
    return side


# --------------------------------------------------------------------------- report


HEADERS = [
    "side",
    "trials",
    "wall (s)",
    "service / plain",
    "target",
    "mean trial (s)",
    "overhead / trial (ms)",
    "vs plain / trial (ms)",
    "job total (s)",
    "best ROC AUC",
    "load 1 min",
]


def rows(plain: Side, services: list[Side]) -> list[list[str]]:
    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    out, ref = [], plain.reference
    for side in [plain, *services]:
        is_plain = side is plain
        ratio = None if is_plain or side.wall is None or not ref else side.wall / ref
        target = TARGETS.get(side.slots)
        verdict = ""
        if ratio is not None and target is not None:
            verdict = " ✓" if ratio <= target else " ✗"
        vs_plain = None
        if not is_plain and side.wall is not None and ref and side.trials:
            vs_plain = (side.wall - ref) / side.trials * 1000
        load = f"{side.load[0]:.1f} → {side.load[1]:.1f}" if side.load else "–"
        out.append(
            [
                side.name,
                str(side.trials),
                fmt(side.wall, ".1f"),
                "1.00" if is_plain else fmt(ratio, ".2f") + verdict,
                "" if is_plain or target is None else f"≤ {target:.2f}",
                fmt(side.mean_trial, ".2f"),
                fmt(side.overhead_ms, ".0f"),
                "" if is_plain else fmt(vs_plain, "+.0f"),
                "" if is_plain else fmt(side.total, ".1f"),
                fmt(side.best, ".4f"),
                load,
            ]
        )
    return out


NOTES = [
    "wall: plain = load + split + prepare + study.optimize (its first run); service = POST /training/start until "
    "the trials endpoint lists N finished trials. service / plain divides by the mean of the plain loop's two runs.",
    "overhead / trial = (wall − Σ trial durations ÷ slots) ÷ N; vs plain / trial = (service wall − that mean) ÷ N.",
    "job total: POST until COMPLETED (adds the final fit, MLflow registration and publishing).",
    "Trial durations: the objective's own timing (plain), experiment_duration_minutes (service). With 2 slots "
    "each trial gets 1 thread (cores ÷ slots), so its duration is longer than a plain 2-thread trial.",
]


def print_rich(title: str, plain: Side, services: list[Side], footer: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows(plain, services):
        table.add_row(*row)
    console = Console(width=200)
    console.print(table)
    for line in footer + NOTES:
        console.print(f"  {line}", highlight=False)


def print_markdown(title: str, plain: Side, services: list[Side], footer: list[str]) -> None:
    print(f"**{title}**\n")
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|")
    for row in rows(plain, services):
        print("| " + " | ".join(row) + " |")
    print()
    for line in footer + NOTES:
        print(f"- {line}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description="The service's tuning overhead: the same LightGBM TPE search as a plain in-process "
        "study.optimize and through the embedded stack with 1 and 2 trial slots, for one or "
        "several seeds (each seed: its own generated data set and sampler seed, on both sides).",
    )
    parser.add_argument("--trials", type=int, default=None, help="trials per side (default 50; --quick: 6)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~2 minutes): 6 trials on a smaller data set, one seed",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help=f"rows of the generated data set (default {DEFAULT_ROWS}: a plain TPE trial then takes "
        "~1-2 s on 2 cores, depending on the seed's configurations; --quick: 2000)",
    )
    parser.add_argument(
        "--slots", default="1,2", help="trial-slot settings for the service side (default 1,2)"
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help=f"comma-separated data, prepare and TPE seeds (default {','.join(map(str, SEEDS))}; "
        f"--quick: {SEEDS[0]}). Which configurations a search picks sets its cost (the plain "
        "loop's mean trial ranges 1.1-2.1 s over seeds at 4,000 rows), so the verdict is on "
        "the sums over all seeds",
    )
    parser.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds a service job may take before it is reported as hung (default: 60 + 30 x trials)",
    )
    parser.add_argument("--skip-service", action="store_true", help="plain side only")
    parser.add_argument(
        "--details",
        action="store_true",
        help="also print each seed's own table (always printed when there is one seed)",
    )
    parser.add_argument(
        "--keep-home",
        action="store_true",
        help="keep each run's temporary PMLS_HOME (logs, database) even when it succeeded",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log every plain trial (time, score, parameters)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown on stdout")
    args = parser.parse_args(argv)
    args.trials = args.trials or (6 if args.quick else 50)
    args.rows = args.rows or (2_000 if args.quick else DEFAULT_ROWS)
    args.slots = [int(s) for s in str(args.slots).split(",") if s.strip()]
    if args.seed is not None:
        args.seeds = [args.seed]
    elif args.seeds:
        args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    else:
        args.seeds = SEEDS[:1] if args.quick else list(SEEDS)
    args.timeout = args.timeout or 60 + 30 * args.trials
    return args


@dataclass
class SeedRun:
    """One seed: its data set, the plain loop and each service side with the same seed."""

    seed: int
    plain: Side
    calibration: float
    services: list[Side] = field(default_factory=list)
    equal: dict[int, float] = field(
        default_factory=dict
    )  # slots -> plain wall over that side's configurations

    def equal_work(self, side: Side) -> float | None:
        """The plain wall over ``side``'s configurations: the plain loop's own when they are the same."""
        if side.params and side.params == self.plain.params:
            return self.plain.reference
        return self.equal.get(side.slots)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Stop the stack (finally blocks) on Ctrl-C or SIGTERM, also when started in the background, where
    # the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    warnings.filterwarnings("ignore", category=UserWarning)
    run_started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="pmls-overhead-data-"))
    os.environ["PMLS_DATA_ROOTS"] = str(workdir)  # the service reads sources under its data roots only
    runs: dict[int, SeedRun] = {}
    try:
        sources = {
            seed: make_dataset(workdir / f"overhead-{seed}.parquet", args.rows, seed) for seed in args.seeds
        }
        log(f"data: {args.rows} rows x 20 features + {TIME_COLUMN}, seeds {args.seeds} -> {workdir}")
        # Seed by seed, each side right after the other (plain, 1 slot, 2 slots, the plain loop over the 2-slot
        # configurations, the plain loop again): this machine's speed changes in phases of seconds to minutes, and
        # sides measured minutes apart can differ by a third for that alone. A fresh stack per seed and setting.
        for seed, source in sources.items():
            plain, calibration = run_plain(source, args.trials, seed, verbose=args.verbose)
            run = runs[seed] = SeedRun(seed, plain, calibration)
            if args.skip_service:
                continue
            for slots in args.slots:
                run.services.append(
                    run_service(
                        source, args.trials, slots, seed, timeout=args.timeout, keep_home=args.keep_home
                    )
                )
            # One slot evaluates the plain loop's very configurations (same seeds, same ask schedule). With
            # two slots the sampler sees the other slot's running trial and the trials get one thread each, so
            # the configurations differ: the plain loop re-runs that side's own list to compare equal work.
            for side in run.services:
                if side.params and side.params != plain.params:
                    run.equal[side.slots] = run_plain_same(source, side.params, seed)
            # The plain loop once more (A-B-A): the reference is the mean of both plain walls.
            plain.again = run_plain_same(source, plain.params, seed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - run_started
    show = print_markdown if args.markdown else print_rich
    if len(runs) == 1 or args.details:
        for run in runs.values():
            title = (
                f"Tuning overhead, seed {run.seed}: {args.trials} TPE trials of {FAMILY.value}, {FOLDS}-fold CV, "
                f"{args.rows} rows, {os.cpu_count()} cores"
            )
            show(title, run.plain, run.services, seed_footer(run))
    if len(runs) > 1 and not args.skip_service:
        print_summary(list(runs.values()), args, markdown=args.markdown)
    print(f"\nwhole benchmark run: {elapsed / 60:.1f} min", flush=True)


def seed_footer(run: SeedRun) -> list[str]:
    plain, services = run.plain, run.services
    footer = [
        f"plain trial at default parameters ({THREADS} threads): {run.calibration:.2f} s; plain mean over the study: "
        f"{plain.mean_trial:.2f} s (median {statistics.median(plain.durations):.2f} s, "
        f"min {min(plain.durations):.2f} s, max {max(plain.durations):.2f} s); "
        f"plain preparation {plain.extra['prepare_s']:.2f} s, optimize {plain.extra['optimize_s']:.1f} s",
    ]
    if plain.again is not None:
        footer.append(
            f"plain wall: {plain.wall:.1f} s before the services, {plain.again:.1f} s after them (same "
            f"configurations); the ratios use the mean, {plain.reference:.1f} s"
        )
    for side in services:
        if "stack_start_s" in side.extra:
            footer.append(
                f"{side.name}: stack start, workers warm and polling: {side.extra['stack_start_s']:.1f} s "
                "(not in the wall time)"
            )
        if side.error:
            footer.append(f"{side.name} FAILED: {side.error}")
    for side in services:
        if side.params:
            same = sum(1 for a, b in zip(side.params, plain.params, strict=False) if a == b)
            footer.append(
                f"{side.name}: {same} of {len(side.params)} configurations identical to the plain loop's"
                + (" (equal work)" if same == len(side.params) == len(plain.params) else "")
            )
    for side in services:
        steady = _steady(run, side)
        if steady is not None:
            # Contention from the service's own processes shows in its trial times, which this figure does not use.
            footer.append(
                f"{side.name}: at the plain loop's own trial times plus the service's orchestration "
                f"({side.overhead_ms:.0f} ms a trial against the plain loop's {plain.overhead_ms:.0f} ms), "
                f"the ratio would be {steady / plain.wall:.2f}; the service's trials averaged "
                f"{side.mean_trial:.2f} s against {plain.mean_trial:.2f} s"
            )
    for side in services:
        wall = run.equal.get(side.slots)  # only when the configurations differ from the plain loop's
        if side.wall and wall:
            footer.append(
                f"equal work: the plain loop over {side.name}'s own {len(side.params)} configurations "
                f"takes {wall:.1f} s -> {side.name} / plain = {side.wall / wall:.2f}"
            )
            if side.durations:
                # What the slots alone allow: the trials' own time split over the slots, nothing else.
                bound = sum(side.durations) / side.slots
                footer.append(
                    f"{side.name}: its trials alone (Σ durations ÷ {side.slots} slots = {bound:.1f} s) "
                    f"would give {bound / wall:.2f}; the rest ({side.wall - bound:.1f} s) is orchestration "
                    f"and the job's own preparation"
                )
    return footer


def _steady(run: SeedRun, side: Side) -> float | None:
    """The one-slot wall at the plain loop's own trial times plus the service's measured orchestration: the
    ratio without the machine's drift (same configurations, same threads, same code)."""
    plain = run.plain
    if side.slots != 1 or side.params != plain.params or side.overhead_ms is None or not plain.durations:
        return None
    return sum(plain.durations) + side.trials * side.overhead_ms / 1000


def summary_rows(runs: list[SeedRun], slot_settings: list[int]) -> tuple[list[str], list[list[str]]]:
    """One row per seed and one for all seeds together (sums of walls: the verdict)."""
    headers = ["seed", "plain mean trial (s)", "plain wall before / after (s)"]
    for slots in slot_settings:
        name = f"{slots} slot{'s' if slots > 1 else ''}"
        headers += [f"{name} (s)", f"{name} / plain"]
        if slots == 1:
            headers += [f"{name}, steady"]
        if slots > 1:
            headers += [f"{name}, equal work", f"{name}, trials alone"]

    def ratio(num: float | None, den: float | None, target: float | None = None) -> str:
        if num is None or not den:
            return "–"
        value = num / den
        mark = "" if target is None else (" ✓" if value <= target else " ✗")
        return f"{value:.2f}{mark}"

    out: list[list[str]] = []
    totals: dict[str, float] = {}
    steadies: list[tuple[float | None, float]] = []
    complete = True

    def add(key: str, value: float | None) -> None:
        nonlocal complete
        if value is None:
            complete = False
        else:
            totals[key] = totals.get(key, 0.0) + value

    for run in runs:
        plain = run.plain
        row = [
            str(run.seed),
            f"{plain.mean_trial:.2f}",
            f"{plain.wall:.1f} / {plain.again:.1f}" if plain.again is not None else f"{plain.wall:.1f}",
        ]
        add("plain", plain.reference)
        add("plain_trials", sum(plain.durations))
        by_slots = {side.slots: side for side in run.services}
        for slots in slot_settings:
            side = by_slots.get(slots)
            wall = side.wall if side else None
            row += ["–" if wall is None else f"{wall:.1f}", ratio(wall, plain.reference)]
            add(f"wall{slots}", wall)
            if slots == 1:
                steady = _steady(run, side) if side else None
                row += [ratio(steady, plain.wall)]
                steadies.append((steady, plain.wall))
            if slots > 1:
                equal = run.equal_work(side) if side else None
                bound = sum(side.durations) / slots if side and side.durations else None
                row += [ratio(wall, equal), ratio(bound, equal)]
                add(f"equal{slots}", equal)
                add(f"bound{slots}", bound)
        out.append(row)
    if complete:
        mean_trial = totals["plain_trials"] / sum(len(r.plain.durations) for r in runs)
        row = [f"all {len(runs)} (Σ walls)", f"{mean_trial:.2f}", f"{totals['plain']:.1f} (mean of both)"]
        for slots in slot_settings:
            row += [
                f"{totals[f'wall{slots}']:.1f}",
                ratio(totals[f"wall{slots}"], totals["plain"], TARGETS.get(slots)),
            ]
            if slots == 1:
                known = all(value is not None for value, _ in steadies)
                row += [ratio(sum(v for v, _ in steadies), sum(w for _, w in steadies)) if known else "–"]
            if slots > 1:
                row += [
                    ratio(totals[f"wall{slots}"], totals[f"equal{slots}"]),
                    ratio(totals[f"bound{slots}"], totals[f"equal{slots}"]),
                ]
        out.append(row)
    return headers, out


def print_summary(runs: list[SeedRun], args: argparse.Namespace, *, markdown: bool) -> None:
    headers, table_rows = summary_rows(runs, args.slots)
    targets = ", ".join(f"{k} slot{'s' if k > 1 else ''} ≤ {v:.2f}" for k, v in TARGETS.items())
    title = (
        f"Tuning overhead over {len(runs)} seeds: {args.trials} TPE trials of {FAMILY.value} each, "
        f"{FOLDS}-fold CV, {args.rows} rows, {os.cpu_count()} cores"
    )
    notes = [
        "Each seed has its own generated data set and sampler seed, the same on both sides. X / plain = the "
        "service's wall ÷ the mean of the plain loop's two walls (before and after the services).",
        "With one slot both sides evaluate the same configurations. With two, the parallel search picks others "
        "(the sampler sees the other slot's running trial), and what they cost varies by seed: the verdict "
        f"(targets: {targets}) is on the "
        "sums over all seeds.",
        "equal work: the plain loop over the service's own configurations; trials alone: Σ the service's trial "
        "durations ÷ slots over that wall (no orchestration at all).",
        "1 slot, steady: the plain loop's own trial times plus the service's measured orchestration, over the plain "
        "wall. This machine's speed changes in phases of seconds to minutes (the same 50 configurations ran 0.75-1.3x "
        "as long from one job to the next on one idle stack), which the A-B-A mean does not remove.",
    ]
    errors = [
        f"seed {run.seed}, {side.name} FAILED: {side.error}"
        for run in runs
        for side in run.services
        if side.error
    ]
    if markdown:
        print(f"**{title}**\n")
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|")
        for row in table_rows:
            print("| " + " | ".join(row) + " |")
        print()
        for line in notes + errors:
            print(f"- {line}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in table_rows:
        table.add_row(*row)
    console = Console(width=220)
    console.print(table)
    for line in notes + errors:
        console.print(f"  {line}", highlight=False)


if __name__ == "__main__":
    main()

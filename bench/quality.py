"""Benchmark of model quality at a fixed wall budget: the service's ENSEMBLE against its best single family,
default LightGBM and FLAML.

Run from the repository root::

    .venv/bin/python -m bench.quality                      # 5 data sets, 60 s per method (~45 min on 2 cores)
    .venv/bin/python -m bench.quality --budget 30          # another budget (seconds per method and set)
    .venv/bin/python -m bench.quality --sets wine,churn    # some of the sets
    .venv/bin/python -m bench.quality --quick              # smoke run: breast_cancer and wine, 15 s budgets
    .venv/bin/python -m bench.quality --markdown           # the tables as Markdown on stdout

FLAML is a bench-only dependency (``pip install -e '.[bench]'`` or ``.venv/bin/pip install flaml==2.7.0``;
not ``flaml[automl]``, whose pins would downgrade XGBoost); without it the FLAML column is skipped.

**Data sets** — nothing is downloaded. scikit-learn's bundled ``breast_cancer`` (binary), ``wine`` and
``digits`` (multiclass) and ``diabetes`` (regression), plus the project's time-ordered churn set
(``pmls.ml.demo_data.generate_demo_dataset``, binary, 21,600 rows, entity ``customer_id``, split by
``DEMO_PERIODS``). Each scikit-learn set is written to Parquet with a synthetic ``event_time``: a seeded
random permutation of the rows mapped to consecutive hours, so that three ISO-8601 periods cut at 60 % /
20 % / 20 % of the rows (closed-open ``start/end`` date-times) are random training / validation / test
splits. The request lists the real columns as ``features`` (the synthetic clock is no feature) and asks for
``cv_strategy: stratified`` (the rows are i.i.d.; for regression the service falls back to a shuffled
k-fold). The churn request is the demo's: all columns but the target and entity (``event_time`` becomes
year / month / day / weekday / hour features), ``cv_strategy: auto`` (time-series folds).

**Same rows for everyone.** The bench selects each period's rows itself with the service's own period
parser (``start <= t < end``) and checks the counts against the intended cuts. Test scores are computed
by the bench, uniformly, on the test rows, with the service's primary metric for the task
(``PRIMARY_METRIC``: binary ROC AUC ↑, multiclass log loss ↓, regression RMSE ↓) via
``pmls.ml.metrics.compute_metrics``. Each service model's own reported test score is shown beside it as a
check that the service tested on the same rows.

**Methods**, per set, in one process run; one embedded stack (temporary ``PMLS_HOME``, free ports) serves
every job, one job at a time, and nothing else of the bench runs while a job does:

* **ENSEMBLE** — ``POST /api/v1/training/start`` with ``model_type: ENSEMBLE``,
  ``optimization_timeout`` = the budget, ``optimization_trials: 10000`` (so the time binds), a fixed
  ``random_seed``, a unique ``model_name``. The job tunes its whole portfolio (LightGBM, XGBoost, random
  forest, MLP; the LSTM too when the rows are series, i.e. churn) within that one budget, builds and picks
  the ensemble on validation and refits it on training + validation. The registered model
  (``models:/NAME/VERSION`` from ``GET /api/v1/models/artifacts/{model_id}``) is loaded with
  ``mlflow.pyfunc.load_model`` and predicts the raw test rows (every source column but the target). On
  churn, whose rows are series of an entity, the training and validation rows are sent first as history
  and only the test rows' predictions are scored: the LSTM (alone or as an ENSEMBLE member) builds each
  row's window from the request's earlier rows of its entity, as the service does when it scores its test
  period; for row-wise models this changes nothing.
* **best single** — one job per family of ENSEMBLE's portfolio (``ensemble_families``), each with the same
  budget to itself; the family with the best CV score on its job's folds (the artifact's ``cv_mean``: the
  service's own rule for picking a single model; the validation score when a job has none; never the test
  score) is the best single, its test score is reported. Every family's figures are in the detail table.
* **LightGBM defaults** — ``LGBMClassifier()`` / ``LGBMRegressor()`` with only ``random_state``,
  ``n_jobs`` and ``verbose`` set, fitted on training + validation rows.
* **FLAML** — ``flaml.AutoML().fit(X, y, task=..., time_budget=budget, metric=roc_auc / log_loss / rmse,
  seed=..., n_jobs=cores, verbose=0)`` on training + validation rows (it validates internally).

The in-process baselines get the same feature columns as the service: the entity column dropped, strings
as pandas categories (the training rows' vocabulary; unseen values missing), booleans as 0/1, a datetime as
its year / month / day / weekday / hour. Budgets are wall-clock budgets per method and set; a service job's
wall time (POST to COMPLETED) also contains validation, loading, preparation, the final fit, the refit and
MLflow registration, FLAML's contains its final retrain. Every run sees the same 2-core machine, so the
load average is printed with the figures.

This is a benchmark, not a test: it asserts nothing and prints figures only.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from pmls.contracts import ModelType, Task
from pmls.contracts.params import ensemble_families
from pmls.contracts.periods import parse_period
from pmls.ml.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC, compute_metrics

SEED = 7
DEFAULT_BUDGET = 60
QUICK_BUDGET = 15
QUICK_SETS = ("breast_cancer", "wine")
TRIALS = 10_000  # more than any budget allows: the time budget binds
CORES = os.cpu_count() or 2
PORT_VARS = ("PMLS_API_PORT", "PMLS_TEMPORAL_PORT", "PMLS_TEMPORAL_UI_PORT", "PMLS_POSTGRES_PORT",
             "PMLS_REDIS_PORT", "PMLS_MLFLOW_PORT")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
SPLITS = ("train", "validation", "test")
TIME_COLUMN = "event_time"
TARGET_COLUMN = "target"
ORIGIN = datetime(2024, 1, 1)
DATETIME_PARTS = ("year", "month", "day", "dayofweek", "hour")  # as the service's preprocessor derives them
LGBM = "LightGBM defaults"
FLAML = "FLAML"
ENSEMBLE = ModelType.ENSEMBLE.value
METRIC_LABEL = {"roc_auc": "ROC AUC ↑", "log_loss": "log loss ↓", "rmse": "RMSE ↓"}
FLAML_INSTALL = ".venv/bin/pip install flaml==2.7.0  (or: .venv/bin/pip install -e '.[bench]')"


def log(message: str) -> None:
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')} load {load}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


@dataclass
class DataSet:
    name: str
    task: Task
    source: Path
    target: str
    periods: dict[str, str]
    description: str
    entity: str | None = None
    features: list[str] | None = None  # the request's dataset_config.features (None: the service's default)
    cv_strategy: str = "auto"
    classes: list | None = None
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)  # rows per split, selected by period

    @property
    def metric(self) -> str:
        return PRIMARY_METRIC[self.task]

    @property
    def families(self) -> list[ModelType]:
        return ensemble_families(TIME_COLUMN, self.entity)

    def y(self, split: str) -> np.ndarray:
        """Class indices (classification, in the order of ``classes``) or values (regression)."""
        values = self.frames[split].get_column(self.target).to_numpy()
        if self.task is Task.REGRESSION:
            return values.astype(np.float64)
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[v] for v in values.tolist()], dtype=np.int64)

    def serving_rows(self) -> tuple[pd.DataFrame, slice]:
        """The raw rows sent to a served model (every source column but the target), and where the test rows'
        predictions are in its output.

        On a series set (``entity``), the training and validation rows go first as history: a sequence model
        (the LSTM, or an ENSEMBLE with an LSTM member) builds each row's window from the request's earlier
        rows of the same entity, and the service scores its own test period with that history too. Row-wise
        models predict each row alone, so the extra rows change nothing for them.
        """
        if not self.entity:
            return self.frames["test"].drop(self.target).to_pandas(), slice(None)
        rows = pl.concat([self.frames[s] for s in SPLITS]).drop(self.target).to_pandas()
        start = self.frames["train"].height + self.frames["validation"].height
        return rows, slice(start, None)


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _iid(name: str, loader: Callable, task: Task, workdir: Path, seed: int) -> DataSet:
    """A bundled scikit-learn set with a synthetic clock: random row order -> consecutive hours."""
    bunch = loader()
    X, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    columns = [_safe(str(c)) for c in bunch.feature_names]
    n = len(y)
    rng = np.random.default_rng(seed)
    slot = np.empty(n, dtype=np.int64)
    slot[rng.permutation(n)] = np.arange(n)  # row permutation[i] is the i-th in time
    moments = (np.datetime64(ORIGIN) + slot.astype("timedelta64[h]")).astype("datetime64[us]")
    target = y.astype(np.float64) if task is Task.REGRESSION else y.astype(np.int64)
    frame = pl.DataFrame({c: X[:, j] for j, c in enumerate(columns)}).with_columns(
        pl.Series(TIME_COLUMN, moments), pl.Series(TARGET_COLUMN, target)).sort(TIME_COLUMN)
    source = workdir / f"{name}.parquet"
    frame.write_parquet(source)
    n_train, n_valid = round(0.6 * n), round(0.2 * n)
    cuts = [ORIGIN + timedelta(hours=h) for h in (0, n_train, n_train + n_valid, n)]
    periods = {f"{split}_period": f"{_stamp(cuts[i])}/{_stamp(cuts[i + 1])}"
               for i, split in enumerate(("training", "validation", "test"))}
    kind = "regression" if task is Task.REGRESSION else f"{task.value}, {len(np.unique(y))} classes"
    ds = DataSet(name, task, source, TARGET_COLUMN, periods, f"{kind}; {n} rows × {len(columns)} features",
                 features=columns, cv_strategy="stratified")
    _select(ds, frame, expected=(n_train, n_valid, n - n_train - n_valid))
    return ds


def _churn(workdir: Path) -> DataSet:
    from pmls.ml.demo_data import DEMO_PERIODS, generate_demo_dataset

    source = generate_demo_dataset(workdir / "churn.parquet")
    frame = pl.read_parquet(source)
    ds = DataSet("churn", Task.BINARY, source, "churned", dict(DEMO_PERIODS),
                 f"binary, time-ordered; {frame.height} rows × {frame.width - 2} columns (entity customer_id)",
                 entity="customer_id", cv_strategy="auto")
    _select(ds, frame)
    return ds


def _select(ds: DataSet, frame: pl.DataFrame, expected: tuple[int, int, int] | None = None) -> None:
    """Each split's rows by its period, closed-open, as the service splits them."""
    for split, key in zip(SPLITS, ("training_period", "validation_period", "test_period"), strict=True):
        period = parse_period(ds.periods[key])
        ds.frames[split] = frame.filter((pl.col(TIME_COLUMN) >= period.start) & (pl.col(TIME_COLUMN) < period.end))
    sizes = tuple(ds.frames[s].height for s in SPLITS)
    if expected is not None and sizes != expected:
        raise RuntimeError(f"{ds.name}: periods select {sizes} rows, the cuts were {expected}")
    if ds.task is not Task.REGRESSION:
        ds.classes = sorted(frame.get_column(ds.target).unique().to_list())
    ds.description += f"; train/valid/test {'/'.join(map(str, sizes))}"


def load_set(name: str, workdir: Path, seed: int) -> DataSet:
    from sklearn import datasets

    if name == "breast_cancer":
        return _iid(name, datasets.load_breast_cancer, Task.BINARY, workdir, seed)
    if name == "wine":
        return _iid(name, datasets.load_wine, Task.MULTICLASS, workdir, seed)
    if name == "digits":
        return _iid(name, datasets.load_digits, Task.MULTICLASS, workdir, seed)
    if name == "diabetes":
        return _iid(name, datasets.load_diabetes, Task.REGRESSION, workdir, seed)
    if name == "churn":
        return _churn(workdir)
    raise ValueError(f"unknown data set {name!r}")


SET_NAMES = ("breast_cancer", "wine", "digits", "diabetes", "churn")


def baseline_features(ds: DataSet) -> dict[str, pd.DataFrame]:
    """The service's feature columns as a pandas frame per split, for LightGBM defaults and FLAML."""
    train = ds.frames["train"]
    columns = ds.features or [c for c in train.columns if c not in (ds.target, ds.entity)]
    vocab = {c: sorted(train.get_column(c).drop_nulls().unique().to_list())
             for c in columns if train.schema[c] in (pl.String, pl.Categorical)}
    out = {}
    for split in SPLITS:
        frame = ds.frames[split].select(columns)
        exprs = []
        for c in columns:
            dtype = frame.schema[c]
            if isinstance(dtype, pl.Datetime):
                moment = pl.col(c)
                parts = {"year": moment.dt.year(), "month": moment.dt.month(), "day": moment.dt.day(),
                         "dayofweek": moment.dt.weekday() - 1, "hour": moment.dt.hour()}
                exprs += [parts[p].cast(pl.Float64).alias(f"{c}_{p}") for p in DATETIME_PARTS]
            elif dtype == pl.Boolean:
                exprs.append(pl.col(c).cast(pl.Int8))
            else:
                exprs.append(pl.col(c))
        pdf = frame.select(exprs).to_pandas()
        for c, categories in vocab.items():
            pdf[c] = pd.Categorical(pdf[c].astype(object), categories=categories)
        out[split] = pdf
    return out


def test_score(ds: DataSet, predicted: np.ndarray) -> float:
    return compute_metrics(ds.task, ds.y("test"), predicted)[ds.metric]


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    method: str  # ENSEMBLE, a family, LightGBM defaults, FLAML
    test: float | None = None  # computed by the bench on the test rows
    validation: float | None = None  # service jobs: the artifact's validation score
    cv: float | None = None  # service jobs: the CV mean of the chosen configuration on the job's folds
    service_test: float | None = None  # service jobs: the test score the service reported
    wall: float | None = None
    load: tuple[float, float] | None = None
    error: str | None = None
    note: str = ""
    job_id: str | None = None

    def cell(self) -> str:
        if self.error:
            return "failed: " + self.error.splitlines()[0][:80]
        return "–" if self.test is None else f"{self.test:.4f}"


@dataclass
class SetResult:
    ds: DataSet
    results: dict[str, Result] = field(default_factory=dict)

    @property
    def higher(self) -> bool:
        return self.ds.metric in HIGHER_IS_BETTER

    def better(self, a: float, b: float) -> float:
        """How much a beats b (positive: a is better), in the metric's own units."""
        return a - b if self.higher else b - a

    def best_single_basis(self) -> str:
        done = [self.results[f.value] for f in self.ds.families if f.value in self.results
                and self.results[f.value].validation is not None and self.results[f.value].test is not None]
        return "CV" if done and all(r.cv is not None for r in done) else "validation"

    def best_single(self) -> Result | None:
        """The family the service itself would pick: best CV score on the job's folds, else best validation
        score (never chosen by test score). Validation alone favours the families early-stopped on it."""
        done = [self.results[f.value] for f in self.ds.families if f.value in self.results
                and self.results[f.value].validation is not None and self.results[f.value].test is not None]
        if not done:
            return None
        if all(r.cv is not None for r in done):
            return max(done, key=lambda r: r.cv if self.higher else -r.cv)
        return max(done, key=lambda r: r.validation if self.higher else -r.validation)


def _timed(result: Result, work: Callable[[], None]) -> Result:
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    try:
        work()
    except Exception as exc:  # noqa: BLE001 - a failed method is a cell in the table, not the end of the run
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    if result.wall is None:
        result.wall = time.perf_counter() - started
    result.load = (load0, os.getloadavg()[0])
    return result


# --------------------------------------------------------------------------- in-process baselines


def run_lightgbm(ds: DataSet, X: dict[str, pd.DataFrame], seed: int) -> Result:
    import lightgbm as lgb

    result = Result(LGBM)

    def work() -> None:
        X_fit = pd.concat([X["train"], X["validation"]], ignore_index=True)
        y_fit = np.concatenate([ds.y("train"), ds.y("validation")])
        started = time.perf_counter()
        if ds.task is Task.REGRESSION:
            model = lgb.LGBMRegressor(random_state=seed, n_jobs=CORES, verbose=-1).fit(X_fit, y_fit)
            result.wall = time.perf_counter() - started
            predicted = model.predict(X["test"])
        else:
            model = lgb.LGBMClassifier(random_state=seed, n_jobs=CORES, verbose=-1).fit(X_fit, y_fit)
            result.wall = time.perf_counter() - started
            predicted = _full_proba(model.predict_proba(X["test"]), model.classes_, len(ds.classes))
        result.test = test_score(ds, predicted)

    return _timed(result, work)


def _full_proba(proba: np.ndarray, seen, k: int) -> np.ndarray:
    """Columns for every class index, whichever classes a model saw."""
    out = np.zeros((proba.shape[0], k))
    out[:, np.asarray(seen, dtype=np.int64)] = proba
    return out


def flaml_available() -> bool:
    try:
        import flaml.automl  # noqa: F401
    except ImportError:
        return False
    return True


def run_flaml(ds: DataSet, X: dict[str, pd.DataFrame], budget: int, seed: int) -> Result:
    from flaml import AutoML

    result = Result(FLAML)

    def work() -> None:
        X_fit = pd.concat([X["train"], X["validation"]], ignore_index=True)
        y_fit = np.concatenate([ds.y("train"), ds.y("validation")])
        automl = AutoML()
        logging.getLogger("flaml.automl.logger").setLevel(logging.WARNING)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            automl.fit(X_fit, y_fit, task="regression" if ds.task is Task.REGRESSION else "classification",
                       time_budget=budget, metric=ds.metric, seed=seed, n_jobs=CORES, verbose=0)
            result.wall = time.perf_counter() - started
            if ds.task is Task.REGRESSION:
                predicted = automl.predict(X["test"])
            else:
                predicted = _full_proba(automl.predict_proba(X["test"]), automl.classes_, len(ds.classes))
        result.test = test_score(ds, predicted)
        result.note = f"best {automl.best_estimator}, {len(automl.config_history)} configs"

    return _timed(result, work)


# --------------------------------------------------------------------------- service


def request_body(ds: DataSet, family: str, job_id: str, budget: int, seed: int) -> dict:
    dataset = {"source": str(ds.source), "target": ds.target, "timestamp_column": TIME_COLUMN, **ds.periods}
    if ds.entity:
        dataset["entity_column"] = ds.entity
    if ds.features:
        dataset["features"] = ds.features
    return {
        "training_id": job_id, "model_type": family, "model_name": job_id, "random_seed": seed,
        "dataset_config": dataset,
        "hyperparameter_config": {"optimization_trials": TRIALS, "optimization_timeout": f"{budget}s"},
        "validation_config": {"cv_strategy": ds.cv_strategy},
    }


def _metric(metrics: dict | None, name: str) -> float | None:
    value = (metrics or {}).get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def _ensemble_note(run_id: str | None) -> str:
    """``blend: LIGHTGBM 0.62, XGBOOST 0.38`` from the run's ensemble.json."""
    import mlflow

    if not run_id:
        return ""
    try:
        spec = mlflow.artifacts.load_dict(f"runs:/{run_id}/ensemble.json")
    except Exception as exc:  # noqa: BLE001 - a note only
        return f"(ensemble.json: {type(exc).__name__})"
    names = [c.get("model_type", "?") for c in spec.get("candidates", [])]
    members = [names[i] if i < len(names) else str(i) for i in spec.get("members", [])]
    weights = spec.get("weights")
    shown = (", ".join(f"{m} {w:.2f}" for m, w in zip(members, weights, strict=False)) if weights
             else ", ".join(members))
    return f"{spec.get('method', '?')}: {shown} (of {len(names)} candidates)"


class Service:
    """One embedded stack for every job of the run; jobs run one at a time."""

    def __init__(self, *, keep_home: bool, job_timeout: float, seed: int) -> None:
        self.keep_home = keep_home
        self.job_timeout = job_timeout
        self.seed = seed
        self.home = Path(tempfile.mkdtemp(prefix="pmls-quality-"))
        self.stack = None
        self.api = None
        self.failed = False
        self.start_s: float | None = None
        self.run_tag = f"{time.strftime('%H%M%S')}{os.urandom(2).hex()}"

    def start(self) -> None:
        import httpx
        import mlflow

        from pmls.settings import Settings
        from pmls.stack import Stack, free_port

        os.environ["PMLS_HOME"] = str(self.home)
        for var in PORT_VARS:
            os.environ[var] = str(free_port())
        started = time.perf_counter()
        self.stack = Stack(Settings())
        self.stack.start(progress=lambda msg: log(f"service: {msg}"))
        self.stack.wait_for_workers()
        self.start_s = time.perf_counter() - started
        log(f"service: stack up in {self.start_s:.1f} s; PMLS_HOME {self.home}")
        mlflow.set_tracking_uri(self.stack.settings.mlflow.tracking_uri)
        mlflow.set_registry_uri(self.stack.settings.mlflow.tracking_uri)
        self.api = httpx.Client(base_url=self.stack.settings.api.base_url, timeout=60)

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        if self.stack is not None:
            t = time.perf_counter()
            self.stack.stop()
            log(f"service: stack stopped in {time.perf_counter() - t:.1f} s")
        if self.failed or self.keep_home:
            log(f"service: PMLS_HOME kept: {self.home} (logs in {self.home / 'logs'})")
        else:
            shutil.rmtree(self.home, ignore_errors=True)

    def print_log_tails(self) -> None:
        for logfile in sorted((self.home / "logs").glob("*.log")):
            tail = logfile.read_text(errors="replace")[-1500:]
            print(f"----- {logfile} (tail)\n{tail}", file=sys.stderr)

    def run(self, ds: DataSet, family: str, budget: int) -> Result:
        job_id = f"q{self.run_tag}_{ds.name}_{family.lower()}"
        result = Result(family, job_id=job_id)
        log(f"{ds.name}: {family}: POST /training/start ({budget} s budget)")
        _timed(result, lambda: self._job(ds, family, budget, result))
        if result.error:
            self.failed = True
            log(f"{ds.name}: {family} FAILED: {result.error}")
            self.print_log_tails()
        else:
            log(f"{ds.name}: {family}: COMPLETED in {result.wall:.1f} s; validation {ds.metric} "
                f"{_fmt(result.validation)}, test {_fmt(result.test)} (service reported {_fmt(result.service_test)})"
                + (f"; {result.note}" if result.note else ""))
        return result

    def _job(self, ds: DataSet, family: str, budget: int, result: Result) -> None:
        import mlflow.pyfunc

        api = self.api
        posted = time.perf_counter()
        resp = api.post("/api/v1/training/start", json=request_body(ds, family, result.job_id, budget, self.seed))
        if resp.status_code not in (200, 202):
            raise RuntimeError(f"POST /training/start answered {resp.status_code}: {resp.text[:1500]}")
        job: dict = {}
        while True:
            job = api.get(f"/api/v1/training/{result.job_id}/status").json()
            if job.get("status") in TERMINAL:
                result.wall = time.perf_counter() - posted
                break
            if time.perf_counter() - posted > self.job_timeout:
                api.post(f"/api/v1/training/{result.job_id}/cancel")
                raise TimeoutError(f"job {result.job_id} not finished after {self.job_timeout:.0f} s "
                                   f"(stage {job.get('current_stage')}); cancelled")
            time.sleep(2.0)
        if job["status"] != "COMPLETED":
            raise RuntimeError(f"job {job['status']} at stage {job.get('current_stage')}: {job.get('error')}")
        if not job.get("model_id"):
            raise RuntimeError("job COMPLETED without a model_id")
        resp = api.get(f"/api/v1/models/artifacts/{job['model_id']}")
        if resp.status_code != 200:
            raise RuntimeError(f"GET /models/artifacts/{job['model_id']} answered {resp.status_code}: "
                               f"{resp.text[:500]}")
        artifact = resp.json()
        perf = artifact.get("performance_metrics") or {}
        metrics = job.get("training_metrics") or {}
        if perf.get("primary_metric") not in (None, ds.metric):
            result.note = f"service's primary metric {perf.get('primary_metric')}! "
        result.validation = _metric(perf.get("validation"), ds.metric)
        result.cv = perf.get("cv_mean")
        if result.validation is None:
            result.validation = _metric(metrics.get("validation_metrics"), ds.metric)
        result.service_test = _metric(perf.get("test"), ds.metric)
        if result.service_test is None:
            result.service_test = _metric(metrics.get("test_metrics"), ds.metric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The raw rows carry columns the model does not use (the synthetic clock): MLflow says so each time.
            logging.getLogger("mlflow.models.utils").setLevel(logging.ERROR)
            model = mlflow.pyfunc.load_model(artifact["model_uri"])
            rows, test_part = ds.serving_rows()
            out = model.predict(rows).iloc[test_part]
        if ds.task is Task.REGRESSION:
            predicted = out["prediction"].to_numpy(dtype=np.float64)
        else:
            columns = [f"proba_{c}" for c in ds.classes]
            missing = [c for c in columns if c not in out.columns]
            if missing:
                raise RuntimeError(f"the served model's output lacks {missing}; it has {list(out.columns)}")
            predicted = out[columns].to_numpy(dtype=np.float64)
        result.test = test_score(ds, predicted)
        if family == ENSEMBLE:
            result.note += _ensemble_note(artifact.get("mlflow_run_id"))


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def summary_rows(sets: list[SetResult], with_flaml: bool) -> list[list[str]]:
    rows = []
    for sr in sets:
        ens, best = sr.results.get(ENSEMBLE), sr.best_single()
        lgbm, flaml = sr.results.get(LGBM), sr.results.get(FLAML)
        vs_best = vs_flaml = "–"
        if ens and ens.test is not None and best is not None:
            delta = sr.better(ens.test, best.test)
            vs_best = f"{'✓' if delta >= 0 else '✗'} ({delta:+.4f})"
        if ens and ens.test is not None and flaml and flaml.test is not None:
            delta = sr.better(ens.test, flaml.test)
            vs_flaml = f"{'ahead' if delta > 0 else 'tie' if delta == 0 else 'behind'} ({delta:+.4f})"
        elif not with_flaml:
            vs_flaml = "skipped"
        singles_failed = [f.value for f in sr.ds.families if f.value in sr.results and sr.results[f.value].error]
        best_cell = f"{best.test:.4f} ({best.method})" if best else "–"
        if singles_failed:
            best_cell += f" [failed: {', '.join(singles_failed)}]"
        rows.append([
            sr.ds.name, sr.ds.task.value, METRIC_LABEL.get(sr.ds.metric, sr.ds.metric),
            ens.cell() if ens else "–", best_cell, lgbm.cell() if lgbm else "–",
            (flaml.cell() if flaml else "skipped"), vs_best, vs_flaml,
        ])
    return rows


SUMMARY_HEADERS = ["set", "task", "metric", ENSEMBLE, "best single (family)", LGBM, FLAML,
                   "ENSEMBLE ≥ best single", "ENSEMBLE vs FLAML"]
DETAIL_HEADERS = ["set", "method", "CV mean (service)", "validation (service)", "test (bench)", "test (service)", "wall (s)", "load 1 min", "note"]


def detail_rows(sets: list[SetResult]) -> list[list[str]]:
    rows = []
    for sr in sets:
        best = sr.best_single()
        for name, r in sr.results.items():
            note = r.note
            if best is not None and r is best:
                note = (f"best single by {sr.best_single_basis()}; " + note).rstrip("; ")
            if r.error:
                note = f"failed: {r.error}"
            load = f"{r.load[0]:.1f} → {r.load[1]:.1f}" if r.load else "–"
            rows.append([sr.ds.name, name, _fmt(r.cv), _fmt(r.validation), _fmt(r.test), _fmt(r.service_test),
                         _fmt(r.wall, ".1f"), load, note])
    return rows


def verdict_lines(sets: list[SetResult], with_flaml: bool) -> list[str]:
    scored = [sr for sr in sets if sr.results.get(ENSEMBLE) and sr.results[ENSEMBLE].test is not None]
    lines = []
    comparable = [sr for sr in scored if sr.best_single() is not None]
    wins = sum(1 for sr in comparable if sr.better(sr.results[ENSEMBLE].test, sr.best_single().test) >= 0)
    lines.append(f"ENSEMBLE ≥ best single family (target: every set): {wins} of {len(comparable)} sets"
                 + (f" ({len(sets) - len(comparable)} not comparable)" if len(comparable) < len(sets) else ""))
    if with_flaml:
        vs = [sr for sr in scored if sr.results.get(FLAML) and sr.results[FLAML].test is not None]
        ahead = sum(1 for sr in vs if sr.better(sr.results[ENSEMBLE].test, sr.results[FLAML].test) > 0)
        lines.append(f"ENSEMBLE ahead of FLAML (target: most sets): {ahead} of {len(vs)} sets")
    return lines


NOTES = [
    "test: scored by the bench on the test period's rows with the task's primary metric (binary ROC AUC ↑, "
    "multiclass log loss ↓, regression RMSE ↓); test (service): what the service itself reported for that model.",
    "best single: the family whose job has the best CV mean on its folds (the service's own rule; the validation "
    "score where a job has none), never chosen by test score; the delta columns are signed so that + means "
    "ENSEMBLE is better.",
    "wall: service = POST /training/start until COMPLETED (budget + validation, load, prepare, final fit, "
    "refit, registration); LightGBM defaults and FLAML = the fit call, on training + validation rows.",
]


def print_rich(title: str, sets: list[SetResult], with_flaml: bool, footer: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=220)
    summary = Table(title=title, title_justify="left")
    for i, header in enumerate(SUMMARY_HEADERS):
        summary.add_column(header, justify="left" if i < 3 else "right")
    for row in summary_rows(sets, with_flaml):
        summary.add_row(*row)
    console.print(summary)
    detail = Table(title="Per method", title_justify="left")
    for i, header in enumerate(DETAIL_HEADERS):
        detail.add_column(header, justify="left" if i in (0, 1, 7) else "right")
    for row in detail_rows(sets):
        detail.add_row(*row)
    console.print(detail)
    for line in footer + NOTES:
        console.print(f"  {line}", highlight=False)


def print_markdown(title: str, sets: list[SetResult], with_flaml: bool, footer: list[str]) -> None:
    def table(headers: list[str], rows: list[list[str]], left: int) -> None:
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join(["---"] * left + ["---:"] * (len(headers) - left)) + "|")
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        print()

    print(f"**{title}**\n")
    table(SUMMARY_HEADERS, summary_rows(sets, with_flaml), 3)
    print("**Per method**\n")
    table(DETAIL_HEADERS, detail_rows(sets), 2)
    for line in footer + NOTES:
        print(f"- {line}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description="Test scores at a fixed wall budget: the service's ENSEMBLE against its best single family, "
                    "default LightGBM and FLAML, on bundled public data sets and the churn demo set.",
    )
    parser.add_argument("--budget", type=int, default=None,
                        help=f"wall budget per method and set, seconds (default {DEFAULT_BUDGET}; "
                             f"--quick: {QUICK_BUDGET})")
    parser.add_argument("--sets", default=None,
                        help=f"comma-separated, from {','.join(SET_NAMES)} (default: all; --quick: "
                             f"{','.join(QUICK_SETS)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {' and '.join(QUICK_SETS)}, {QUICK_BUDGET} s budgets")
    parser.add_argument("--seed", type=int, default=SEED, help=f"split, request and baseline seed (default {SEED})")
    parser.add_argument("--job-timeout", type=float, default=None,
                        help="seconds a service job may take before it is cancelled and reported as failed "
                             "(default: 600 + 3 x budget)")
    parser.add_argument("--skip-service", action="store_true", help="in-process baselines only (no stack)")
    parser.add_argument("--keep-home", action="store_true",
                        help="keep the temporary PMLS_HOME (logs, database, MLflow) even when every job succeeded")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown on stdout")
    args = parser.parse_args(argv)
    args.budget = args.budget or (QUICK_BUDGET if args.quick else DEFAULT_BUDGET)
    names = args.sets or (",".join(QUICK_SETS) if args.quick else ",".join(SET_NAMES))
    args.sets = [s.strip() for s in names.split(",") if s.strip()]
    unknown = [s for s in args.sets if s not in SET_NAMES]
    if unknown:
        parser.error(f"unknown data set(s) {', '.join(unknown)}; choose from {', '.join(SET_NAMES)}")
    args.job_timeout = args.job_timeout or 600 + 3 * args.budget
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Stop the stack (finally blocks) on Ctrl-C or SIGTERM, also when started in the background, where
    # the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    warnings.filterwarnings("ignore", category=UserWarning)
    run_started = time.perf_counter()
    load_started = os.getloadavg()
    with_flaml = flaml_available()
    if not with_flaml:
        log(f"FLAML is not installed: its column is skipped. Install it with {FLAML_INSTALL}")
    workdir = Path(tempfile.mkdtemp(prefix="pmls-quality-data-"))
    service = None if args.skip_service else Service(keep_home=args.keep_home, job_timeout=args.job_timeout,
                                                     seed=args.seed)
    sets: list[SetResult] = []
    try:
        if service is not None:
            service.start()
        for name in args.sets:
            ds = load_set(name, workdir, args.seed)
            log(f"{name}: {ds.description}; metric {ds.metric}; periods {ds.periods}")
            sr = SetResult(ds)
            sets.append(sr)
            X = baseline_features(ds)
            sr.results[LGBM] = run_lightgbm(ds, X, args.seed)
            log(f"{name}: {LGBM}: test {sr.results[LGBM].cell()} in {sr.results[LGBM].wall:.1f} s")
            if with_flaml:
                log(f"{name}: {FLAML}: fitting ({args.budget} s budget)")
                sr.results[FLAML] = run_flaml(ds, X, args.budget, args.seed)
                log(f"{name}: {FLAML}: test {sr.results[FLAML].cell()} in {sr.results[FLAML].wall:.1f} s; "
                    f"{sr.results[FLAML].note}")
            if service is not None:
                for family in [ENSEMBLE, *(f.value for f in ds.families)]:
                    sr.results[family] = service.run(ds, family, args.budget)
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - run_started
    load_ended = os.getloadavg()
    title = (f"Test scores at a {args.budget} s wall budget per method and set ({CORES} cores, seed {args.seed})")
    footer = verdict_lines(sets, with_flaml) + [f"{sr.ds.name}: {sr.ds.description}" for sr in sets]
    if service is not None and service.start_s is not None:
        footer.append(f"stack start, workers polling: {service.start_s:.1f} s (in no method's wall time)")
    if not with_flaml:
        footer.append(f"FLAML skipped: not installed ({FLAML_INSTALL})")
    footer.append("load average 1/5/15 min: " + " / ".join(f"{v:.1f}" for v in load_started) + " at the start, "
                  + " / ".join(f"{v:.1f}" for v in load_ended) + " at the end")
    peak = max([v for sr in sets for r in sr.results.values() if r.load for v in r.load] + [load_ended[0]])
    if peak > CORES + 0.5:
        footer.append(f"the machine was busy: 1-minute load up to {peak:.1f} on {CORES} cores; wall times, "
                      "FLAML's configurations per budget and the service's trials per budget all suffer")
    footer.append(f"whole benchmark run: {elapsed / 60:.1f} min")
    (print_markdown if args.markdown else print_rich)(title, sets, with_flaml, footer)


if __name__ == "__main__":
    main()

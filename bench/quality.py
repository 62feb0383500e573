"""Benchmark of model quality at a fixed wall budget: the service's ENSEMBLE and LIGHTGBM jobs against a plain
Optuna-LightGBM loop, FLAML, LightGBM defaults and (optionally) AutoGluon, on real tabular data sets, several
seeds, with wins and losses counted only beyond the seeds' noise.

Run from the repository root::

    .venv/bin/python -m bench.quality --quick                          # 2 small sets, 15 s, seed 0
    .venv/bin/python -m bench.quality --out q.jsonl                   # every set, 60 s, seeds 0,1,2
    .venv/bin/python -m bench.quality --out q.jsonl --resume --budget 300 --sets a,b,c,d   # same file
    .venv/bin/python -m bench.quality --report q.jsonl --markdown     # the tables from the file alone
    .venv/bin/python -m bench.quality --autogluon-python /tmp/agvenv/bin/python ...   # add AutoGluon

**Data** (``bench.datasets``): each set ships inside a package (nothing is downloaded) and comes with one
fixed split into ``visible`` rows, which every method learns from, and ``hidden`` rows, which only the scorer
sees. Every method gets the same visible rows and the same wall budget; the seed varies what each method
draws at random (the service's own split of the visible rows, samplers, folds, fits), never the split.

**Score**: the bench scores every method's predictions for the hidden rows itself with the service's primary
metric (``PRIMARY_METRIC`` via ``compute_metrics``: binary ROC AUC ↑, multiclass log loss ↓, regression RMSE
↓). Class labels are indexed over the classes of visible and hidden rows; a class a model never saw gets
probability 0.

**Methods**, one at a time, nothing else of the bench running while one is timed:

* ``ENSEMBLE`` and ``LIGHTGBM`` (the service): the visible rows are written to Parquet and
  ``POST /api/v1/training/start`` gets ``dataset_config: {source, target, timestamp_column and entity_column
  when the set has them}`` and no periods (the service splits the visible rows itself),
  ``hyperparameter_config: {optimization_timeout: "<budget>s", optimization_trials: 10000}`` (the time
  binds), ``random_seed: seed`` and a unique ``training_id`` / ``model_name``. When the job is COMPLETED its
  registered pyfunc (``models:/NAME/VERSION`` from the artifact) predicts the raw hidden rows (every column but
  the target); for a set with an entity the visible rows go first as history and only the hidden rows'
  predictions are scored (a sequence model builds each row's window from earlier rows of its entity). The wall
  is POST to COMPLETED: budget plus loading, preparation, final fit, refit and registration. One embedded stack
  (temporary ``PMLS_HOME``, free ports) serves the whole run, started before the first service job and idle
  while an in-process method runs. A FAILED job is recorded with its error and the run goes on (the PMLS_HOME
  is then kept and the workers' log tails printed); "no trial finished within optimization_timeout" is
  recorded as *budget too short*, not as a crash.
* ``OPTUNA_LGBM``, ``LGBM_DEFAULTS``, ``FLAML``: in process, see ``bench/plain_loop.py`` (features as the
  service's preprocessor sees them: strings as categories of the visible rows' vocabulary, a date-time as
  year / month / day / weekday / hour, the entity column dropped). ``study.optimize(timeout=...)`` checks the
  clock between trials, so the plain loop's wall can exceed the budget by one trial and its refit (its wall
  column shows it); LightGBM defaults ignores the budget and is recorded under each budget anyway.
* ``AUTOGLUON``: ``TabularPredictor(...).fit(visible, time_limit=budget, presets="medium_quality")`` in a
  separate venv given by ``--autogluon-python`` (``bench/autogluon_runner.py``), the seed as its learner's
  ``random_state``; the wall is its fit call; skipped when not given.

Order: budgets ascending, then sets, seeds, methods (so the shorter budget's table fills first).

**Results** go to ``--out`` (default: a new file under the temp dir, named in the log) as one JSON line per
(set, method, seed, budget) the moment it is measured; ``--resume`` skips the keys already there, so a crash
loses at most the method that was running (``--retry-failed`` runs the failed keys again; the last line of a
key counts). ``--report FILE`` prints the tables from a file alone (``--sets`` / ``--methods`` / ``--budget``
/ ``--seeds`` filter it). A second budget on some sets is a second run with ``--resume`` on the same file.

**Tables**, per budget: each set's hidden score per method as mean ± sample std over the seeds that scored,
with the mean wall seconds; then, for ENSEMBLE and for LIGHTGBM against every other method, wins / ties /
losses over the sets. **Noise rule**: on the seeds both methods scored (at least two), with Δ = the mean
advantage of the first (signed so that + is better) and noise = the pooled sample std of the two methods'
scores over those seeds, √((s₁² + s₂²) / 2), a set is a win when Δ > noise, a loss when Δ < −noise, and a tie
otherwise. A method that failed on every seed of a set where the other scored loses that set; fewer than two
common seeds (e.g. ``--quick``) is "not judged". The load average is in every log line and the tables' notes:
on a busy machine every wall-budgeted method gets less done.

This is a benchmark, not a test: it asserts nothing and prints figures only.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from bench import plain_loop
from pmls.contracts import Task
from pmls.ml.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC, compute_metrics
from pmls.settings import PORT_VARS

CORES = os.cpu_count() or 2
DEFAULT_BUDGET, QUICK_BUDGET, DEFAULT_SEEDS = 60, 15, (0, 1, 2)
QUICK_SETS = ("digits", "ames")  # --quick; where SETS lacks them, its first two sets tagged "small"
TRIALS = 10_000  # more than any budget allows: the time budget binds
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
BUDGET_ERROR = "no trial finished within optimization_timeout"
SERVICE = ("ENSEMBLE", "LIGHTGBM")
LABELS = {
    "ENSEMBLE": "ENSEMBLE",
    "LIGHTGBM": "LIGHTGBM",
    "OPTUNA_LGBM": "Optuna-LightGBM",
    "FLAML": "FLAML",
    "LGBM_DEFAULTS": "LightGBM defaults",
    "AUTOGLUON": "AutoGluon",
}
ALIASES = {
    "optuna": "OPTUNA_LGBM",
    "plain": "OPTUNA_LGBM",
    "defaults": "LGBM_DEFAULTS",
    "autogluon": "AUTOGLUON",
}
PRODUCT_DIRS = ("pmls", "api", "workers", "workflows", "activities")
METRIC_LABEL = {"roc_auc": "ROC AUC ↑", "log_loss": "log loss ↓", "rmse": "RMSE ↓"}


def product_commit() -> str:
    """The commit of the code a service result measures, so results of different code are told apart."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", *PRODUCT_DIRS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("+changes" if changed else "")


def log(message: str) -> None:
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')} load {load}] {message}", file=sys.stderr, flush=True)


@dataclass
class Record:
    """One (set, method, seed, budget) result: one line of the results file."""

    dataset: str
    method: str
    seed: int
    budget: int
    task: str
    metric: str
    score: float | None = None
    wall: float | None = None
    status: str = "ok"  # ok | budget (too short for a service job) | failed
    error: str | None = None
    note: str = ""
    load: list[float] = field(default_factory=list)  # 1-minute load average before / after
    rows: list[int] = field(default_factory=list)  # visible, hidden
    cores: int = CORES
    at: str = ""
    commit: str = ""  # the product code measured (git HEAD; "+changes" when pmls & co. differed from it)

    @property
    def key(self) -> tuple:
        return self.dataset, self.method, self.seed, self.budget


def read_records(path: Path) -> list[Record]:
    """Every record in the file; for a key recorded twice (a retried failure), the last one."""
    latest: dict[tuple, Record] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = Record(**json.loads(line))
                latest[record.key] = record
    return list(latest.values())


# --------------------------------------------------------------------------- a set, prepared once


class Prepared:
    def __init__(self, bs, workdir: Path) -> None:
        self.bs = bs
        self.metric = PRIMARY_METRIC[bs.task]
        self.f = plain_loop.frames(bs)
        self.dir = workdir / re.sub(r"[^0-9A-Za-z_]", "_", bs.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hidden = bs.hidden.filter(pl.col(bs.target).is_not_null())  # the rows the scorer scores
        self._paths: dict[str, Path] = {}

    def path(self, kind: str) -> Path:
        """Parquet files, written on first use: the service's source, AutoGluon's visible and hidden rows."""
        if kind not in self._paths:
            bs, path = self.bs, self.dir / f"{kind}.parquet"
            drop = [bs.entity] if bs.entity else []
            frame = {
                "source": bs.visible,
                "ag_visible": bs.visible.drop(drop),
                "ag_hidden": self.hidden.drop([bs.target, *drop]),
            }[kind]
            frame.write_parquet(path)
            self._paths[kind] = path
        return self._paths[kind]

    def score(self, predicted: np.ndarray) -> float:
        value = compute_metrics(self.bs.task, self.f.y_hidden, predicted).get(self.metric)
        if value is None:
            raise RuntimeError(f"{self.metric} is undefined on the hidden rows (one class only?)")
        return float(value)

    def proba_from(self, frame, prefix: str = "") -> np.ndarray:
        """An n x len(classes) matrix from a frame with one column per class label (``prefix + str(label)``)."""
        seen = set(self.bs.visible.get_column(self.bs.target).drop_nulls().to_list())
        out = np.zeros((len(frame), len(self.f.classes)))
        for k, label in enumerate(self.f.classes):
            column = f"{prefix}{label}"
            if column in frame.columns:
                out[:, k] = frame[column].to_numpy(dtype=np.float64)
            elif label in seen:
                raise RuntimeError(f"the predictions lack {column!r}; they have {list(frame.columns)}")
        return out


# --------------------------------------------------------------------------- the service


class Service:
    """One embedded stack for every job of the run; jobs run one at a time."""

    def __init__(self, *, keep_home: bool, job_timeout: float | None) -> None:
        self.keep_home, self.job_timeout = keep_home, job_timeout
        self.home = Path(tempfile.mkdtemp(prefix="pmls-quality-"))
        self.stack = self.api = None
        self.failed = False
        self.tag = f"{time.strftime('%H%M%S')}{os.urandom(2).hex()}"

    def start(self) -> None:
        import httpx
        import mlflow

        from pmls.settings import Settings
        from pmls.stack import Stack, free_port

        os.environ["PMLS_HOME"] = str(self.home)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # loading a model, per job
        for var in PORT_VARS:
            os.environ[var] = str(free_port())
        started = time.perf_counter()
        self.stack = Stack(Settings())
        self.stack.start(progress=lambda msg: log(f"service: {msg}"))
        self.stack.wait_for_workers()
        log(f"service: stack up in {time.perf_counter() - started:.1f} s; PMLS_HOME {self.home}")
        mlflow.set_tracking_uri(self.stack.settings.mlflow.tracking_uri)
        mlflow.set_registry_uri(self.stack.settings.mlflow.tracking_uri)
        from pmls.auth import api_headers

        self.api = httpx.Client(
            base_url=self.stack.settings.api.base_url, timeout=60, headers=api_headers(self.stack.settings)
        )

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        if self.stack is not None:
            self.stack.stop()
            log("service: stack stopped")
        if self.failed or self.keep_home:
            log(f"service: PMLS_HOME kept: {self.home} (logs in {self.home / 'logs'})")
        else:
            shutil.rmtree(self.home, ignore_errors=True)

    def run(self, p: Prepared, method: str, seed: int, budget: int, record: Record) -> np.ndarray:
        import mlflow.pyfunc

        bs = p.bs
        job_id = re.sub(
            r"[^0-9A-Za-z_]", "_", f"q{self.tag}_{bs.name[:40]}_{method.lower()}_{budget}s_s{seed}"
        )
        dataset = {"source": str(p.path("source")), "target": bs.target}
        dataset |= {"timestamp_column": bs.timestamp} if bs.timestamp else {}
        dataset |= {"entity_column": bs.entity} if bs.entity else {}
        body = {
            "training_id": job_id,
            "model_type": method,
            "model_name": job_id,
            "random_seed": seed,
            "dataset_config": dataset,
            "hyperparameter_config": {"optimization_timeout": f"{budget}s", "optimization_trials": TRIALS},
        }
        posted = time.perf_counter()
        resp = self.api.post("/api/v1/training/start", json=body)
        if resp.status_code not in (200, 202):
            raise RuntimeError(f"POST /training/start answered {resp.status_code}: {resp.text[:1500]}")
        timeout = self.job_timeout or 600 + 3 * budget
        while (job := self.api.get(f"/api/v1/training/{job_id}/status").json()).get("status") not in TERMINAL:
            if time.perf_counter() - posted > timeout:
                self.api.post(f"/api/v1/training/{job_id}/cancel")
                raise TimeoutError(
                    f"job {job_id} not finished after {timeout:.0f} s "
                    f"(stage {job.get('current_stage')}); cancelled"
                )
            time.sleep(1.0)
        record.wall = time.perf_counter() - posted
        if job["status"] != "COMPLETED":
            error = str(job.get("error"))
            record.status = "budget" if BUDGET_ERROR in error else "failed"
            raise RuntimeError(f"job {job['status']} at stage {job.get('current_stage')}: {error}")
        resp = self.api.get(f"/api/v1/models/artifacts/{job['model_id']}")
        if resp.status_code != 200:
            raise RuntimeError(f"GET /models/artifacts/{job['model_id']} answered {resp.status_code}")
        artifact = resp.json()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("mlflow.models.utils").setLevel(logging.ERROR)  # extra columns: said each time
            model = mlflow.pyfunc.load_model(artifact["model_uri"])
            rows = p.hidden.drop(bs.target)
            if bs.entity:  # visible rows first, as each entity's history
                rows = pl.concat([bs.visible.drop(bs.target), rows], how="vertical_relaxed")
            out = model.predict(rows.to_pandas()).iloc[rows.height - p.hidden.height :]
        if method == "ENSEMBLE":
            record.note = _ensemble_note(artifact.get("mlflow_run_id"))
        if bs.task is Task.REGRESSION:
            return out["prediction"].to_numpy(dtype=np.float64)
        return p.proba_from(out, "proba_")

    def print_log_tails(self) -> None:
        for logfile in sorted((self.home / "logs").glob("*.log")):
            print(f"----- {logfile} (tail)\n{logfile.read_text(errors='replace')[-1500:]}", file=sys.stderr)


def _ensemble_note(run_id: str | None) -> str:
    """``blend: LIGHTGBM 0.62, XGBOOST 0.38 (of 5 candidates)`` from the run's ensemble.json."""
    import mlflow

    try:
        spec = mlflow.artifacts.load_dict(f"runs:/{run_id}/ensemble.json")
    except Exception as exc:  # noqa: BLE001 - a note only
        return f"(ensemble.json: {type(exc).__name__})"
    names = [c.get("model_type", "?") for c in spec.get("candidates", [])]
    members = [names[i] if i < len(names) else str(i) for i in spec.get("members", [])]
    weights = spec.get("weights")
    shown = (
        ", ".join(f"{m} {w:.2f}" for m, w in zip(members, weights, strict=False))
        if weights
        else ", ".join(members)
    )
    return f"{spec.get('method', '?')}: {shown} (of {len(names)} candidates)"


# --------------------------------------------------------------------------- one measurement


def measure(p: Prepared, method: str, seed: int, budget: int, service: Service | None, args) -> Record:
    bs = p.bs
    record = Record(
        bs.name,
        method,
        seed,
        budget,
        bs.task.value,
        p.metric,
        rows=[bs.visible.height, p.hidden.height],
        load=[os.getloadavg()[0]],
        commit=args.commit,
    )
    try:
        if method in SERVICE:
            record.score = p.score(service.run(p, method, seed, budget, record))
        elif method == "AUTOGLUON":
            from bench.autogluon_runner import run_autogluon

            frame, record.wall, record.note = run_autogluon(
                args.autogluon_python,
                p.path("ag_visible"),
                p.path("ag_hidden"),
                label=bs.target,
                problem_type=bs.task.value,
                budget=budget,
                seed=seed,
                timeout=3 * budget + 600,
            )
            predicted = (
                frame["prediction"].to_numpy(dtype=np.float64)
                if bs.task is Task.REGRESSION
                else p.proba_from(frame)
            )
            record.score = p.score(predicted)
        else:
            fit = {
                "OPTUNA_LGBM": lambda: plain_loop.optuna_lightgbm(p.f, budget, seed, CORES),
                "LGBM_DEFAULTS": lambda: plain_loop.lightgbm_defaults(p.f, seed, CORES),
                "FLAML": lambda: plain_loop.flaml(p.f, budget, seed, CORES),
            }[method]()
            record.wall, record.note, record.score = fit.wall, fit.note, p.score(fit.predicted)
    except Exception as exc:  # noqa: BLE001 - a failed method is a cell in the table, not the end of the run
        record.status = "failed" if record.status == "ok" else record.status
        record.error = f"{type(exc).__name__}: {exc}"[:2000]
        if method in SERVICE and record.status == "failed":
            service.failed = True
            service.print_log_tails()
    record.load.append(os.getloadavg()[0])
    record.at = time.strftime("%Y-%m-%dT%H:%M:%S")
    return record


# --------------------------------------------------------------------------- tables


def _num(value: float, like: float | None = None) -> str:
    size = abs(like if like is not None else value)
    return f"{value:.1f}" if size >= 100 else f"{value:.2f}" if size >= 10 else f"{value:.4f}"


def _scores(records: list[Record]) -> dict[int, float]:
    return {r.seed: r.score for r in records if r.score is not None}


def cell(records: list[Record]) -> str:
    if not records:
        return "–"
    scores = list(_scores(records).values())
    bad = [r for r in records if r.score is None]
    if not scores:
        return f"{'budget too short' if bad[0].status == 'budget' else bad[0].status} ×{len(bad)}"
    mean = float(np.mean(scores))
    text = _num(mean) + (f" ± {_num(float(np.std(scores, ddof=1)), mean)}" if len(scores) > 1 else "")
    walls = [r.wall for r in records if r.score is not None and r.wall is not None]
    text += f" · {np.mean(walls):.0f} s" if walls else ""
    return text + (
        f" [{len(bad)} of {len(records)} {'/'.join(sorted({r.status for r in bad}))}]" if bad else ""
    )


def verdict(a: list[Record], b: list[Record], higher: bool) -> str | None:
    """'win' / 'tie' / 'loss' of a against b by the noise rule (module docstring); None: not judged."""
    sa, sb = _scores(a), _scores(b)
    if a and b and not sa and sb:
        return "loss"
    if a and b and sa and not sb:
        return "win"
    common = sorted(set(sa) & set(sb))
    if len(common) < 2:
        return None
    xa, xb = np.array([sa[s] for s in common]), np.array([sb[s] for s in common])
    delta = (xa.mean() - xb.mean()) * (1 if higher else -1)
    noise = math.sqrt((xa.var(ddof=1) + xb.var(ddof=1)) / 2)
    return "win" if delta > noise else "loss" if delta < -noise else "tie"


def tables(records: list[Record]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    methods = [m for m in LABELS if any(r.method == m for r in records)]
    for budget in sorted({r.budget for r in records}):
        at = [r for r in records if r.budget == budget]
        sets = list(dict.fromkeys(r.dataset for r in at))
        group = {(s, m): [r for r in at if r.dataset == s and r.method == m] for s in sets for m in methods}
        seeds = sorted({r.seed for r in at})
        rows = []
        for s in sets:
            first = next(r for r in at if r.dataset == s)
            rows.append(
                [
                    s,
                    METRIC_LABEL.get(first.metric, first.metric),
                    "/".join(map(str, first.rows)),
                    *(cell(group[s, m]) for m in methods),
                ]
            )
        out.append(
            (
                f"Hidden scores at a {budget} s budget: mean ± std over seeds {','.join(map(str, seeds))}, "
                "mean wall",
                ["set", "metric", "visible/hidden rows", *(LABELS[m] for m in methods)],
                rows,
            )
        )
        rows = []
        for a in (m for m in SERVICE if m in methods):
            for b in (m for m in methods if m != a and not (a == "LIGHTGBM" and m == "ENSEMBLE")):
                found: dict[str | None, list[str]] = {"win": [], "tie": [], "loss": [], None: []}
                for s in sets:
                    higher = next(r for r in at if r.dataset == s).metric in HIGHER_IS_BETTER
                    if group[s, a] or group[s, b]:
                        found[verdict(group[s, a], group[s, b], higher)].append(s)
                rows.append(
                    [
                        f"{LABELS[a]} vs {LABELS[b]}",
                        *(str(len(found[k])) for k in ("win", "tie", "loss")),
                        str(len(found[None])),
                        ", ".join(found["loss"]) or "–",
                        ", ".join(found["win"]) or "–",
                    ]
                )
        if not rows:
            continue
        out.append(
            (
                f"{budget} s: wins / ties / losses beyond the noise",
                ["comparison", "wins", "ties", "losses", "not judged", "lost on", "won on"],
                rows,
            )
        )
    return out


def _align(header: str) -> str:
    return "---" if header in ("set", "metric", "comparison", "lost on", "won on") else "---:"


def failure_notes(records: list[Record]) -> list[str]:
    """One line per (budget, set, method) with failures: the seeds and the first error."""
    out: dict[tuple, list[Record]] = {}
    for r in sorted(records, key=lambda r: (r.budget, r.seed)):
        if r.score is None:
            out.setdefault((r.budget, r.dataset, r.method), []).append(r)
    return [
        f"{budget} s, {name}, {LABELS.get(method, method)}: {bad[0].status} on seed "
        f"{','.join(str(r.seed) for r in bad)}: {(bad[0].error or '').splitlines()[0][:300]}"
        for (budget, name, method), bad in out.items()
    ]


def print_tables(records: list[Record], markdown: bool, notes: list[str]) -> None:
    notes = [*notes, *failure_notes(records)]
    loads = [v for r in records for v in r.load]
    if loads:
        notes = [
            *notes,
            f"1-minute load average during the methods: {min(loads):.1f}–{max(loads):.1f} on "
            f"{max(r.cores for r in records)} cores"
            + (" (busy: every budgeted method gets less done)" if max(loads) > CORES + 0.5 else ""),
        ]
    if markdown:
        for title, headers, rows in tables(records):
            print(f"**{title}**\n\n| " + " | ".join(headers) + " |\n|" + "|".join(map(_align, headers)) + "|")
            for row in rows:
                print("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
            print()
        print("\n".join(f"- {n}" for n in notes))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=250)
    for title, headers, rows in tables(records):
        table = Table(title=title, title_justify="left")
        for header in headers:
            table.add_column(header, justify="left" if _align(header) == "---" else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for note in notes:
        console.print(f"  {note}", highlight=False)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", help="comma list of bench.datasets.SETS (default: all)")
    parser.add_argument(
        "--budget", help=f"seconds per method, a comma list for several (default {DEFAULT_BUDGET})"
    )
    parser.add_argument("--seeds", help="comma list (default 0,1,2)")
    parser.add_argument("--methods", help=f"comma list of {','.join(LABELS)} (default: all available)")
    parser.add_argument("--quick", action="store_true", help=f"2 small sets, {QUICK_BUDGET} s, seed 0")
    parser.add_argument(
        "--out", type=Path, help="results file, one JSON line per result (default: a new temp file)"
    )
    parser.add_argument("--resume", action="store_true", help="skip the results already in --out")
    parser.add_argument("--retry-failed", action="store_true", help="with --resume: run failed results again")
    parser.add_argument("--report", type=Path, help="print the tables from this results file and exit")
    parser.add_argument("--autogluon-python", help="python of a separate venv with autogluon.tabular")
    parser.add_argument(
        "--job-timeout",
        type=float,
        help="seconds before a service job is cancelled (default 600 + 3 x budget)",
    )
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary PMLS_HOME")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args(argv)
    if args.resume and not args.out:
        parser.error("--resume needs --out")
    split = lambda text: [s.strip() for s in text.split(",") if s.strip()]  # noqa: E731
    args.budgets = [int(b) for b in split(args.budget)] if args.budget else None
    args.seeds = [int(s) for s in split(args.seeds)] if args.seeds else None
    args.methods = [ALIASES.get(m.lower(), m.upper()) for m in split(args.methods)] if args.methods else None
    unknown = [m for m in args.methods or [] if m not in LABELS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(LABELS)}")
    args.sets = split(args.sets) if args.sets else None
    return args


def quick_sets(sets: dict, loaded: dict) -> list[str]:
    if all(name in sets for name in QUICK_SETS):
        return list(QUICK_SETS)
    for name, loader in sets.items():
        if len(loaded) < len(QUICK_SETS) and "small" in (bs := loader()).tags:
            loaded[name] = bs
    return list(loaded) or list(sets)[: len(QUICK_SETS)]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        records = [
            r
            for r in read_records(args.report)
            if (not args.sets or r.dataset in args.sets)
            and (not args.methods or r.method in args.methods)
            and (not args.budgets or r.budget in args.budgets)
            and (not args.seeds or r.seed in args.seeds)
        ]
        print_tables(records, args.markdown, [f"from {args.report}: {len(records)} results"])
        return
    from bench.datasets import SETS

    loaded: dict = {}  # sets loaded to pick --quick's, kept for the run
    sets = args.sets or (quick_sets(SETS, loaded) if args.quick else list(SETS))
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        sys.exit(f"unknown data set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    budgets = sorted(args.budgets or [QUICK_BUDGET if args.quick else DEFAULT_BUDGET])
    seeds = args.seeds or ([0] if args.quick else list(DEFAULT_SEEDS))
    methods = args.methods or [m for m in LABELS if m != "FLAML" or plain_loop.flaml_available()]
    if "FLAML" in methods and not plain_loop.flaml_available():
        log("FLAML is not installed (.venv/bin/pip install flaml==2.7.0): skipped")
        methods.remove("FLAML")
    if "AUTOGLUON" in methods and not args.autogluon_python:
        log(
            "AutoGluon skipped: give --autogluon-python PATH (a separate venv; see bench/autogluon_runner.py)"
        )
        methods.remove("AUTOGLUON")
    args.commit = product_commit()
    out = args.out or Path(tempfile.gettempdir()) / f"pmls-quality-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    done = {r.key: r for r in read_records(out)} if args.resume else {}
    if args.retry_failed:
        done = {k: r for k, r in done.items() if r.score is not None}
    log(
        f"results to {out}; sets {','.join(sets)}; budgets {budgets}; seeds {seeds}; methods {','.join(methods)}"
        + (f"; {len(done)} recorded already" if done else "")
        + f"; code {args.commit or 'unknown'}"
    )
    signal.signal(signal.SIGINT, signal.default_int_handler)  # stop the stack also when started in background
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    warnings.filterwarnings("ignore", category=UserWarning)
    started, workdir = time.perf_counter(), Path(tempfile.mkdtemp(prefix="pmls-quality-data-"))
    os.environ["PMLS_DATA_ROOTS"] = str(workdir)  # the service reads sources under its data roots only
    prepared: dict[str, Prepared | None] = {}
    service: Service | None = None
    try:
        for budget in budgets:
            for name in sets:
                todo = [(s, m) for s in seeds for m in methods if (name, m, s, budget) not in done]
                if not todo:
                    continue
                if name not in prepared:
                    try:
                        prepared[name] = Prepared(loaded.pop(name, None) or SETS[name](), workdir)
                        bs = prepared[name].bs
                        log(
                            f"{name}: {bs.task.value}, {bs.visible.height} visible / {bs.hidden.height} hidden "
                            f"rows; {bs.description}"
                        )
                    except Exception as exc:  # noqa: BLE001 - the other sets still run
                        log(f"{name}: could not load: {type(exc).__name__}: {exc}; skipped")
                        prepared[name] = None
                if prepared[name] is None:
                    continue
                for seed, method in todo:
                    if method in SERVICE and service is None:
                        service = Service(keep_home=args.keep_home, job_timeout=args.job_timeout)
                        service.start()
                    log(f"{name}: {LABELS[method]}, seed {seed}, {budget} s budget")
                    record = measure(prepared[name], method, seed, budget, service, args)
                    with out.open("a") as fh:
                        fh.write(json.dumps(asdict(record)) + "\n")
                    log(
                        f"{name}: {LABELS[method]}, seed {seed}: "
                        + (
                            f"{record.metric} {record.score:.4f}"
                            if record.score is not None
                            else f"{record.status.upper()}: {record.error}"
                        )
                        + (f" in {record.wall:.1f} s" if record.wall is not None else "")
                        + (f"; {record.note}" if record.note else "")
                    )
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    records = [
        r
        for r in read_records(out)
        if r.dataset in sets and r.method in methods and r.budget in budgets and r.seed in seeds
    ]
    notes = [f"{name}: {p.bs.description}" for name, p in prepared.items() if p is not None]
    notes += [
        f"results in {out}; this run took {(time.perf_counter() - started) / 60:.1f} min",
        "score: the bench's, on the hidden rows; cell = mean ± sample std over seeds · mean wall "
        "(service: POST to COMPLETED; in process: the fit; AutoGluon: its fit call)",
    ]
    print_tables(records, args.markdown, notes)


if __name__ == "__main__":
    main()

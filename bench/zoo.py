"""Benchmark of the model zoo against plain LightGBM defaults: fit time, prediction latency, test score.

Run from the repository root::

    .venv/bin/python -m bench.zoo              # full run (~5 minutes on 2 cores)
    .venv/bin/python -m bench.zoo --quick      # a subset, under a minute
    .venv/bin/python -m bench.zoo --markdown   # the same tables as Markdown on stdout

Every tabular family in ``pmls.ml.zoo.REGISTRY`` is fitted through the zoo contract
(``entry.cls(task, num_classes, params=None, seed, num_threads).fit(X, y, X_valid=, y_valid=)``) with
its default parameters, side by side in the same process with the reference: ``lightgbm.LGBMClassifier()``
/ ``LGBMRegressor()`` with default settings (100 rounds, no early stopping; only ``n_jobs``, ``random_state``
and ``verbose`` are set, none of which changes the model). Both see the same fixed, stratified 60/20/20
split (regression: stratified on target quintiles); the zoo uses the 20 % validation part for early
stopping, the reference ignores it. Scores are on the 20 % test part, averaged over the seeds (the split
itself never changes). Latency is measured once per model (first seed): ``predict_proba`` for
classifiers, ``predict`` for regressors, per row on a batch of 1000 rows and on a single row.

The LSTM, the one sequential family, runs on a generated panel (entities x time steps) whose target
depends on past steps; it is compared with LightGBM defaults on the current row only (the reference
there) and with LightGBM on lag features (the flattened window the LSTM sees).

This is a benchmark, not a test: it asserts nothing and prints figures only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import lightgbm as lgb
import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split

from pmls.contracts import ModelType, Task
from pmls.ml.metrics import compute_metrics
from pmls.ml.sequences import build_sequences
from pmls.ml.zoo import REGISTRY

THREADS = 2
SPLIT_SEED = 0
REFERENCE = "LightGBM defaults"
TABULAR_FAMILIES = [t for t, e in REGISTRY.items() if not e.sequential]
BATCH_ROWS = 1000
SEQ_LEN = 8

# (metric name, label, higher is better) per task; the first is the primary score.
METRICS = {
    Task.BINARY: [("roc_auc", "ROC AUC", True), ("accuracy", "accuracy", True)],
    Task.MULTICLASS: [("accuracy", "accuracy", True), ("log_loss", "log loss", False)],
    Task.REGRESSION: [("rmse", "RMSE", False), ("r2", "R²", True)],
}


# --------------------------------------------------------------------------- data


@dataclass
class Dataset:
    name: str
    task: Task
    X: dict[str, np.ndarray]  # train / valid / test
    y: dict[str, np.ndarray]
    num_classes: int | None
    description: str
    # Sequential data sets only: windows per split for the LSTM.
    windows: dict[str, np.ndarray] = field(default_factory=dict)


def _split(X: np.ndarray, y: np.ndarray, task: Task) -> tuple[dict, dict]:
    """Fixed stratified 60/20/20 split (regression: stratified on target quintiles)."""
    if task is Task.REGRESSION:
        strata = np.digitize(y, np.quantile(y, [0.2, 0.4, 0.6, 0.8]))
    else:
        strata = y
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=0.2, stratify=strata, random_state=SPLIT_SEED)
    train, valid = train_test_split(rest, test_size=0.25, stratify=strata[rest], random_state=SPLIT_SEED)
    parts = {"train": train, "valid": valid, "test": test}
    return {k: X[v].astype(np.float32) for k, v in parts.items()}, {k: y[v] for k, v in parts.items()}


def _tabular(name: str, X: np.ndarray, y: np.ndarray, task: Task) -> Dataset:
    if task is Task.REGRESSION:
        y = y.astype(np.float64)
        k = None
    else:
        y = y.astype(np.int64)
        k = int(y.max()) + 1
    Xs, ys = _split(X, y, task)
    kind = "regression" if k is None else f"{task.value}, {k} classes"
    sizes = "/".join(str(len(ys[s])) for s in ("train", "valid", "test"))
    desc = f"{kind}; {len(y)} rows × {X.shape[1]} features; train/valid/test {sizes}"
    return Dataset(name, task, Xs, ys, k, desc)


def load_tabular(name: str, large_rows: int) -> Dataset:
    if name == "breast_cancer":
        X, y = datasets.load_breast_cancer(return_X_y=True)
        return _tabular(name, X, y, Task.BINARY)
    if name == "digits":
        X, y = datasets.load_digits(return_X_y=True)
        return _tabular(name, X, y, Task.MULTICLASS)
    if name == "wine":
        X, y = datasets.load_wine(return_X_y=True)
        return _tabular(name, X, y, Task.MULTICLASS)
    if name == "diabetes":
        X, y = datasets.load_diabetes(return_X_y=True)
        return _tabular(name, X, y, Task.REGRESSION)
    if name == "synthetic":
        X, y = datasets.make_classification(
            n_samples=large_rows, n_features=30, n_informative=12, n_redundant=6, n_clusters_per_class=3,
            flip_y=0.03, class_sep=0.8, random_state=SPLIT_SEED,
        )  # fmt: skip
        ds = _tabular(name, X, y, Task.BINARY)
        ds.description = "make_classification, " + ds.description
        return ds
    raise ValueError(name)


def load_panel(entities: int, steps: int) -> Dataset:
    """A generated panel: per entity, 4 noise features over time; the target reads past steps.

    y_t = x0[t-1] + 0.8 * x1[t-2] * sign(x0[t-3]) + 0.5 * mean(x3[t-4..t]) + 0.5 * x2[t] + noise, with
    x3 an AR(1) series; missing history counts as 0. The current row alone explains little of y.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    n_features = 4
    x = rng.normal(size=(entities, steps, n_features))
    for t in range(1, steps):  # x3 is persistent (AR(1)), the others are white noise
        x[:, t, 3] = 0.8 * x[:, t - 1, 3] + 0.6 * x[:, t, 3]

    def lag(col: int, k: int) -> np.ndarray:
        out = np.zeros((entities, steps))
        out[:, k:] = x[:, : steps - k, col]
        return out

    mean_x3 = sum(lag(3, k) for k in range(5)) / 5
    y = lag(0, 1) + 0.8 * lag(1, 2) * np.sign(lag(0, 3)) + 0.5 * mean_x3 + 0.5 * x[:, :, 2]
    y += 0.3 * rng.normal(size=y.shape)

    X = x.reshape(-1, n_features).astype(np.float32)
    target = y.reshape(-1)
    entity = np.repeat(np.arange(entities), steps)
    order = np.tile(np.arange(steps), entities)
    windows = build_sequences(X, entity, order, SEQ_LEN)
    # Split by entity (60/20/20), so no entity's history leaks from train into test.
    ids = rng.permutation(entities)
    cut1, cut2 = int(0.6 * entities), int(0.8 * entities)
    groups = {"train": ids[:cut1], "valid": ids[cut1:cut2], "test": ids[cut2:]}
    masks = {k: np.isin(entity, v) for k, v in groups.items()}
    sizes = "/".join(str(int(m.sum())) for m in masks.values())
    desc = (
        f"regression; {entities} entities × {steps} steps × {n_features} features, windows of {SEQ_LEN}; "
        f"split by entity, train/valid/test rows {sizes}"
    )
    return Dataset(
        "sequence", Task.REGRESSION,
        {k: X[m] for k, m in masks.items()}, {k: target[m] for k, m in masks.items()}, None, desc,
        windows={k: windows[m] for k, m in masks.items()},
    )  # fmt: skip


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    model: str
    fit_s: list[float] = field(default_factory=list)
    iterations: list[float] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    batch_us: float = float("nan")  # per row, on a batch of BATCH_ROWS
    single_us: float = float("nan")  # one row


def _median_call_s(
    fn: Callable[[], object], budget_s: float, min_reps: int = 3, max_reps: int = 200
) -> float:
    """Median wall time of fn() after one warm-up call, repeated until the budget or max_reps."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _predictor(model, task: Task) -> Callable[[np.ndarray], np.ndarray]:
    return model.predict if task is Task.REGRESSION else model.predict_proba


def _scores(task: Task, y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if task is Task.BINARY:
        predicted = np.asarray(predicted)[:, 1]
    return compute_metrics(task, y, predicted)


class Runner:
    def __init__(
        self,
        seeds: list[int],
        threads: int,
        latency_budget_s: float,
        cheap_s: float,
        log: Callable[[str], None],
    ):
        self.seeds = seeds
        self.cheap_s = cheap_s  # a model whose first fit takes longer runs on the first seed only
        self.threads = threads
        self.latency_budget_s = latency_budget_s
        self.log = log

    def measure(
        self,
        result: Result,
        task: Task,
        fit: Callable[[int], tuple[object, float | None]],
        X_test: np.ndarray,
        y_test: np.ndarray,
    ) -> Result:
        """fit(seed) -> (model, iterations); scores every seed, latency on the first seed's model.

        Seeds are averaged "where cheap": after a first fit slower than ``cheap_s`` the rest are skipped.
        """
        for i, seed in enumerate(self.seeds):
            if i and result.fit_s[0] > self.cheap_s:
                break
            t0 = time.perf_counter()
            model, iterations = fit(seed)
            result.fit_s.append(time.perf_counter() - t0)
            if iterations is not None:
                result.iterations.append(iterations)
            predict = _predictor(model, task)
            for name, value in _scores(task, y_test, predict(X_test)).items():
                result.scores.setdefault(name, []).append(value)
            if i == 0:
                batch = np.resize(X_test, (BATCH_ROWS, *X_test.shape[1:]))
                on_batch = partial(predict, batch)
                on_one = partial(predict, X_test[:1])
                result.batch_us = _median_call_s(on_batch, self.latency_budget_s) / BATCH_ROWS * 1e6
                result.single_us = _median_call_s(on_one, self.latency_budget_s) * 1e6
        self.log(
            f"  {result.model:<32} fit {statistics.mean(result.fit_s):7.2f} s × {len(result.fit_s)} seed(s)"
        )
        return result

    def zoo(
        self, ds: Dataset, family: ModelType, label: str | None = None, sequential: bool = False
    ) -> Result:
        entry = REGISTRY[family]
        X = ds.windows if sequential else ds.X

        def fit(seed: int):
            model = entry.cls(ds.task, ds.num_classes, None, seed, self.threads)
            model.fit(X["train"], ds.y["train"], X_valid=X["valid"], y_valid=ds.y["valid"])
            return model, model.best_iteration_

        return self.measure(Result(label or f"zoo {family.value}"), ds.task, fit, X["test"], ds.y["test"])

    def reference(
        self, ds: Dataset, label: str = REFERENCE, X: dict[str, np.ndarray] | None = None
    ) -> Result:
        X = ds.X if X is None else X

        def fit(seed: int):
            cls = lgb.LGBMRegressor if ds.task is Task.REGRESSION else lgb.LGBMClassifier
            model = cls(n_jobs=self.threads, random_state=seed, verbose=-1)
            model.fit(X["train"], ds.y["train"])
            return model, model.n_estimators

        return self.measure(Result(label), ds.task, fit, X["test"], ds.y["test"])

    def zoo_on(self, ds: Dataset, family: ModelType, label: str, X: dict[str, np.ndarray]) -> Result:
        """A tabular family on another feature matrix (the lag features of the panel)."""
        entry = REGISTRY[family]

        def fit(seed: int):
            model = entry.cls(ds.task, ds.num_classes, None, seed, self.threads)
            model.fit(X["train"], ds.y["train"], X_valid=X["valid"], y_valid=ds.y["valid"])
            return model, model.best_iteration_

        return self.measure(Result(label), ds.task, fit, X["test"], ds.y["test"])


def warm_up(threads: int, log: Callable[[str], None]) -> dict[str, float]:
    """One untimed small fit per family, so one-off start-up costs (torch's lazy initialisation, the
    OpenMP pools) stay out of the tables; returns each family's cold first-fit time."""
    X, y = datasets.make_classification(n_samples=200, n_features=8, random_state=SPLIT_SEED)
    X = X.astype(np.float32)
    cold = {}
    t0 = time.perf_counter()
    lgb.LGBMClassifier(n_jobs=threads, verbose=-1).fit(X, y).predict_proba(X[:1])
    cold[REFERENCE] = time.perf_counter() - t0
    for family, entry in REGISTRY.items():
        Xf = build_sequences(X, None, np.arange(len(X)), 3) if entry.sequential else X
        t0 = time.perf_counter()
        model = entry.cls(Task.BINARY, 2, None, 0, threads)
        model.fit(Xf[:150], y[:150], X_valid=Xf[150:], y_valid=y[150:]).predict_proba(Xf[:1])
        cold[family.value] = time.perf_counter() - t0
    log("warm-up (cold first fit, 150 rows): " + ", ".join(f"{k} {v:.2f} s" for k, v in cold.items()))
    return cold


def run_tabular(runner: Runner, ds: Dataset) -> list[Result]:
    runner.log(f"{ds.name}: {ds.description}")
    results = [runner.reference(ds)]
    for family in TABULAR_FAMILIES:
        results.append(runner.zoo(ds, family))
    return results


def run_sequence(runner: Runner, ds: Dataset) -> list[Result]:
    runner.log(f"{ds.name}: {ds.description}")
    # Lag features: the window the LSTM sees, flattened (NaN where there is no history yet).
    lags = {k: w.reshape(len(w), -1) for k, w in ds.windows.items()}
    results = [
        runner.reference(ds, f"{REFERENCE}, current row"),
        runner.reference(ds, f"{REFERENCE}, {SEQ_LEN} lags", X=lags),
        runner.zoo_on(ds, ModelType.LIGHTGBM, f"zoo {ModelType.LIGHTGBM.value}, {SEQ_LEN} lags", lags),
    ]
    for family, entry in REGISTRY.items():
        if entry.sequential:
            results.append(runner.zoo(ds, family, f"zoo {family.value}, window {SEQ_LEN}", sequential=True))
    return results


# --------------------------------------------------------------------------- reporting


def _fmt(value: float, digits: int = 4) -> str:
    if value != value:  # NaN
        return "–"
    return f"{value:.{digits}f}"


def _time(value: float) -> str:
    if value != value:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table_rows(ds: Dataset, results: list[Result]) -> tuple[list[str], list[list[str]]]:
    ref = results[0]
    metrics = METRICS[ds.task]
    multi_seed = any(len(r.fit_s) > 1 for r in results)
    header = ["model", "seeds", "fit s", "fit × ref", "iters", "µs/row (batch 1000)", "µs (1 row)"]
    for _, label, higher in metrics:
        header += [
            label + (" ±sd" if multi_seed else ""),
            f"Δ {label} vs ref ({'↑' if higher else '↓'} better)",
        ]
    rows = []
    ref_fit = statistics.mean(ref.fit_s)
    for r in results:
        fit = statistics.mean(r.fit_s)
        iters = f"{statistics.mean(r.iterations):.0f}" if r.iterations else "–"
        row = [r.model, str(len(r.fit_s)), _fmt(fit, 3), "1.00" if r is ref else f"{fit / ref_fit:.2f}", iters,
               _time(r.batch_us), _time(r.single_us)]  # fmt: skip
        for name, _, _ in metrics:
            values = r.scores.get(name, [])
            ref_values = ref.scores.get(name, [])
            mean = statistics.mean(values) if values else float("nan")
            ref_mean = statistics.mean(ref_values) if ref_values else float("nan")
            cell = _fmt(mean)
            if multi_seed and values:
                cell += f" ±{statistics.stdev(values):.4f}" if len(values) > 1 else " (1 seed)"
            row += [cell, "–" if r is ref else f"{mean - ref_mean:+.4f}"]
        rows.append(row)
    return header, rows


def iters_note(sequential: bool) -> str:
    note = (
        "iters: boosting rounds kept (zoo: best round under early stopping on the validation split, "
        "at most 1000; reference: 100, no early stopping); forest: none (200 trees); nets: best epoch."
    )
    return note + (" The reference is LightGBM defaults on the current row only." if sequential else "")


def print_rich(ds: Dataset, results: list[Result], sequential: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    header, rows = table_rows(ds, results)
    table = Table(
        title=f"[bold]{ds.name}[/] — {ds.description}", caption=iters_note(sequential),
        title_justify="left", caption_justify="left",
    )  # fmt: skip
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for i, row in enumerate(rows):
        table.add_row(*row, style="bold" if i == 0 else None)
    Console(width=200).print(table)


def print_markdown(ds: Dataset, results: list[Result], sequential: bool) -> None:
    header, rows = table_rows(ds, results)
    lines = [f"### {ds.name}", "", f"{ds.description}.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", iters_note(sequential), ""]
    print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------- main

FULL = ["breast_cancer", "digits", "wine", "diabetes", "synthetic", "sequence"]
QUICK = ["breast_cancer", "wine", "diabetes", "sequence"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.zoo",
        description="Benchmark the pmls model zoo (fit time, prediction latency, test score) against plain "
        "LightGBM defaults on scikit-learn's bundled and generated data sets. Prints figures; asserts nothing.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"a subset in under a minute: {', '.join(QUICK)} (smaller panel), one seed")  # fmt: skip
    parser.add_argument("--markdown", action="store_true",
                        help="write the tables as Markdown to stdout (progress goes to stderr)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds to average over (default 3; 1 with --quick)")  # fmt: skip
    parser.add_argument("--datasets", default=None,
                        help=f"comma-separated subset of: {', '.join(FULL)}")  # fmt: skip
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"num_threads for every model and for torch (default {THREADS})")  # fmt: skip
    parser.add_argument("--cheap-s", type=float, default=10.0,
                        help="a model whose first fit takes longer than this runs on one seed only (default 10)")  # fmt: skip
    parser.add_argument("--large-rows", type=int, default=20_000,
                        help="rows of the generated classification set (default 20000)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    names = args.datasets.split(",") if args.datasets else (QUICK if args.quick else FULL)
    unknown = sorted(set(names) - set(FULL))
    if unknown:
        raise SystemExit(f"unknown data set(s) {unknown}; choose from {FULL}")
    seeds = list(range(args.seeds if args.seeds else (1 if args.quick else 3)))

    import torch  # the torch families leave threads to the process, as the worker does at start-up

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)  # sklearn / lightgbm chatter

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    runner = Runner(seeds, args.threads, 0.05 if args.quick else 0.15, args.cheap_s, log)
    printer = print_markdown if args.markdown else print_rich
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    cold = warm_up(args.threads, log)
    header = (
        f"{args.threads} threads (torch too), seeds {seeds} (a model whose first fit takes > {args.cheap_s:g} s "
        f"runs once), load average {load_before:.1f} on {os.cpu_count()} CPUs at start. Cold first fit, kept "
        "out of the tables: " + ", ".join(f"{k} {v:.2f} s" for k, v in cold.items()) + "."
    )
    if args.markdown:
        command = "python -m bench.zoo" + (" --quick" if args.quick else "")
        print(f"## Model zoo vs plain LightGBM defaults\n\n`{command}`: {header}\n", flush=True)
    else:
        from rich.console import Console

        Console(width=200).print(f"[bold]Model zoo vs plain LightGBM defaults[/]: {header}")
    for name in names:
        if name == "sequence":
            ds = load_panel(entities=100 if args.quick else 200, steps=40)
            printer(ds, run_sequence(runner, ds), True)
        else:
            ds = load_tabular(name, args.large_rows)
            printer(ds, run_tabular(runner, ds), False)
    total = time.perf_counter() - start
    footer = f"Total run time: {total:.1f} s; load average {os.getloadavg()[0]:.1f} at the end."
    print(footer)


if __name__ == "__main__":
    main()

"""AutoGluon for ``bench.quality``, run in its own virtual environment as a subprocess.

AutoGluon pins LightGBM, torch and NumPy versions other than the service's, so it must not be installed into the
project's venv. Give ``bench.quality`` a separate one with ``--autogluon-python PATH``, e.g.::

    python3.11 -m venv /tmp/agvenv
    /tmp/agvenv/bin/pip install 'autogluon.tabular[lightgbm,catboost,xgboost]==1.6.3'

(plain ``autogluon.tabular`` has no gradient-boosting backend: only its scikit-learn models would run).

The parent (:func:`run_autogluon`, stdlib + pandas) writes the visible rows (entity column dropped, as for the
other in-process baselines) and the hidden rows (no target) to Parquet once per set; the child (``python
bench/autogluon_runner.py --visible ... --hidden ... --out ...``: imports only pandas and AutoGluon) fits
``TabularPredictor(label, problem_type, eval_metric, learner_kwargs={"random_state": seed}).fit(visible,
time_limit=budget, presets="medium_quality")`` and writes the hidden rows' predictions (regression:
``prediction``; classification: one column per class label, as text) to Parquet, and its own fit wall time to
``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVAL_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "root_mean_squared_error"}
PRESETS = "medium_quality"


def run_autogluon(
    python: str,
    visible: Path,
    hidden: Path,
    *,
    label: str,
    problem_type: str,
    budget: float,
    seed: int,
    timeout: float,
) -> tuple[object, float, str]:
    """(the child's prediction frame as pandas, its fit wall seconds, a note); raises on failure."""
    import pandas as pd

    work = Path(tempfile.mkdtemp(prefix="pmls-quality-ag-"))
    out = work / "predictions.parquet"
    command = [
        python,
        str(Path(__file__).resolve()),
        "--visible",
        str(visible),
        "--hidden",
        str(hidden),
        "--out",
        str(out),
        "--label",
        label,
        "--problem-type",
        problem_type,
        "--budget",
        str(budget),
        "--seed",
        str(seed),
        "--path",
        str(work / "model"),
    ]
    try:
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        total = time.perf_counter() - started
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"AutoGluon child exited {done.returncode}: {(done.stderr or done.stdout)[-1500:]}"
            )
        info = json.loads(out.with_suffix(".json").read_text())
        note = (
            f"best {info['best']}, {info['models']} models; {total:.0f} s with the subprocess's start"
            f" (AutoGluon {info['version']})"
        )
        return pd.read_parquet(out), float(info["wall"]), note
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    for name in ("--visible", "--hidden", "--out", "--label", "--problem-type", "--path"):
        parser.add_argument(name, required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)

    import autogluon.tabular
    import pandas as pd
    from autogluon.tabular import TabularPredictor

    visible = pd.read_parquet(args.visible)
    hidden = pd.read_parquet(args.hidden)
    predictor = TabularPredictor(
        label=args.label,
        problem_type=args.problem_type,
        eval_metric=EVAL_METRIC[args.problem_type],
        path=args.path,
        verbosity=0,
        learner_kwargs={"random_state": args.seed},
    )
    started = time.perf_counter()
    predictor.fit(visible, time_limit=args.budget, presets=PRESETS)
    wall = time.perf_counter() - started
    if args.problem_type == "regression":
        out = pd.DataFrame({"prediction": predictor.predict(hidden).to_numpy(dtype="float64")})
    else:
        proba = predictor.predict_proba(hidden, as_multiclass=True)
        out = pd.DataFrame({str(c): proba[c].to_numpy(dtype="float64") for c in proba.columns})
    out.to_parquet(args.out)
    info = {
        "wall": wall,
        "best": predictor.model_best,
        "models": len(predictor.model_names()),
        "version": getattr(autogluon.tabular, "__version__", "?"),
    }
    Path(args.out).with_suffix(".json").write_text(json.dumps(info))


if __name__ == "__main__":
    _child(sys.argv[1:])

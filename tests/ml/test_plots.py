"""Diagnostic plots: each writes a valid PNG, degenerate input is skipped (None), hyperparameter
importance is deterministic and finds the informative parameter, and plotting is thread-safe."""

from __future__ import annotations

import logging
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pmls.ml import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, checking its signature and IHDR chunk."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.endswith(b"IEND\xaeB`\x82"), "truncated PNG"
    return width, height


def assert_png(result, path: Path, min_side: int = 150, max_side: int = 4000) -> None:
    assert result == Path(path)
    assert path.is_file() and path.stat().st_size > 1000
    width, height = png_size(path)
    assert min_side <= width <= max_side and min_side <= height <= max_side, (width, height)
    # No temporary file left behind next to it.
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def synthetic_trials(n: int = 40, seed: int = 0) -> list[dict]:
    """Trials whose score depends strongly on ``a`` and not at all on ``b`` (or on ``kind``)."""
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        a = float(rng.uniform(0, 1))
        b = float(rng.uniform(0, 1))
        kind = str(rng.choice(["x", "y"]))
        score = 3.0 * a + 0.02 * rng.normal()
        trials.append(
            {
                "number": i,
                "state": "COMPLETE",
                "score": score,
                "family": "lightgbm",
                "params": {"a": a, "b": b, "kind": kind},
            }
        )
    return trials


def binary_data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    proba = np.clip(0.3 * y + 0.35 + 0.25 * rng.normal(size=n), 0, 1)
    return y, proba


def multiclass_data(n: int = 300, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


# ------------------------------------------------------------------------------------ valid PNGs


def test_feature_importance(tmp_path):
    importance = {f"feature_{i}": float(i) for i in range(40)} | {"price $usd$": 50.0, "bad": float("nan")}
    path = tmp_path / "sub" / "importance.png"  # parent folders are created
    assert_png(plots.feature_importance_plot(importance, path, top=10), path)


def test_confusion_matrix_codes_and_values(tmp_path):
    y, proba = multiclass_data()
    labels = ["cat", "dog", "bird", "fish"]
    pred = proba.argmax(axis=1)
    path = tmp_path / "cm.png"
    assert_png(plots.confusion_matrix_plot(y, pred, labels, path), path)
    # Original class values instead of codes, counts shading, and a probability matrix as y_pred.
    names = np.array(labels)
    path2 = tmp_path / "cm_values.png"
    assert_png(plots.confusion_matrix_plot(names[y], names[pred], labels, path2, normalize=False), path2)
    path3 = tmp_path / "cm_proba.png"
    assert_png(plots.confusion_matrix_plot(y, proba, labels, path3), path3)


def test_roc_binary_and_multiclass(tmp_path):
    y, proba = binary_data()
    path = tmp_path / "roc_binary.png"
    assert_png(plots.roc_curve_plot(y, proba, ["no", "yes"], path), path)
    path2 = tmp_path / "roc_binary_2col.png"
    assert_png(plots.roc_curve_plot(y, np.column_stack([1 - proba, proba]), ["no", "yes"], path2), path2)
    y, proba = multiclass_data(n=600, k=12)
    path3 = tmp_path / "roc_multi.png"
    assert_png(plots.roc_curve_plot(y, proba, [f"class {i}" for i in range(12)], path3), path3)


def test_residuals(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    pred = y + 0.3 * rng.normal(size=200)
    pred[3] = np.nan  # dropped, not an error
    path = tmp_path / "residuals.png"
    assert_png(plots.residual_plot(y, pred, str(path)), path)


def test_cv_scores(tmp_path):
    scores = {
        "lightgbm": [0.81, 0.83, 0.80, 0.82, 0.84],
        "xgboost": [0.80, 0.82, 0.81, 0.80, 0.83],
        "random_forest": [0.78, 0.79, float("nan"), 0.77, 0.80],
        "single": [0.7],
    }
    path = tmp_path / "cv.png"
    assert_png(plots.cv_scores_plot(scores, "roc_auc", path), path)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_optimization_history(tmp_path, direction):
    trials = synthetic_trials(30)
    for i, trial in enumerate(trials):
        trial["family"] = "lightgbm" if i % 2 else "xgboost"
        if i % 7 == 3:
            trial["state"] = "PRUNED"
        if i % 11 == 5:
            trial["state"], trial["score"] = "FAILED", None
    path = tmp_path / f"history_{direction}.png"
    assert_png(plots.optimization_history_plot(trials, "rmse", direction, path), path)


def test_param_importance_plot(tmp_path):
    path = tmp_path / "params.png"
    assert_png(plots.param_importance_plot(synthetic_trials(), path), path)


def test_selected_features(tmp_path):
    kept = [f"kept_feature_{i}" for i in range(60)]
    dropped = {f"noise_{i}": "null importance" for i in range(5)} | {"const": "constant"}
    path = tmp_path / "selection.png"
    assert_png(plots.selected_features_plot(kept, dropped, path), path)


# ------------------------------------------------------------------------------ degenerate input


def test_degenerate_inputs_return_none(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pmls.ml.plots")
    p = tmp_path / "x.png"
    empty = np.array([])
    assert plots.feature_importance_plot({}, p) is None
    assert plots.feature_importance_plot({"a": float("nan")}, p) is None
    assert plots.confusion_matrix_plot(empty, empty, ["a", "b"], p) is None
    assert plots.confusion_matrix_plot(np.array([0, 1]), np.array([0]), ["a", "b"], p) is None
    assert plots.roc_curve_plot(empty, empty, ["a", "b"], p) is None
    assert plots.roc_curve_plot(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9]), ["a", "b"], p) is None
    assert plots.roc_curve_plot(np.array([0, 0]), np.ones((2, 3)) / 3, ["a", "b", "c"], p) is None
    assert plots.residual_plot(empty, empty, p) is None
    assert plots.residual_plot(np.array([np.nan]), np.array([1.0]), p) is None
    assert plots.cv_scores_plot({}, "auc", p) is None
    assert plots.cv_scores_plot({"a": [], "b": [float("nan")]}, "auc", p) is None
    assert plots.optimization_history_plot([], "auc", "maximize", p) is None
    failed = [{"number": 0, "state": "FAILED", "score": None}, {"number": 1, "state": "CANCELLED"}]
    assert plots.optimization_history_plot(failed, "auc", "maximize", p) is None
    assert plots.param_importance_plot([], p) is None
    assert plots.param_importance_plot(synthetic_trials(3), p) is None  # fewer than 4 completed
    same = [{"state": "COMPLETE", "score": 1.0, "params": {"a": i}} for i in range(6)]
    assert plots.param_importance_plot(same, p) is None  # nothing to explain
    assert plots.selected_features_plot([], {}, p) is None
    # All of the above are recognised as degenerate, not caught as errors by the safety net.
    assert [r.getMessage() for r in caplog.records] == []
    # Garbage is skipped too, never raised.
    assert plots.feature_importance_plot(None, p) is None  # type: ignore[arg-type]
    assert plots.optimization_history_plot([None, 5], "auc", "max", p) is None  # type: ignore[list-item]
    assert not p.exists()


def test_single_points_still_plot(tmp_path):
    # One value is a plot, not an error: constant residuals (R² n/a), one trial, one class present.
    p = tmp_path / "one.png"
    assert_png(plots.residual_plot(np.array([1.0]), np.array([1.0]), p), p)
    p2 = tmp_path / "one_trial.png"
    assert_png(
        plots.optimization_history_plot(
            [{"number": 0, "state": "COMPLETE", "score": 0.5}], "auc", "maximize", p2
        ),
        p2,
    )
    p3 = tmp_path / "one_class.png"
    assert_png(plots.confusion_matrix_plot(np.zeros(5, int), np.zeros(5, int), ["a", "b"], p3), p3)


# ---------------------------------------------------------------------------- param importance


def test_param_importance_deterministic_and_informative():
    trials = synthetic_trials()
    first = plots.param_importances(trials)
    second = plots.param_importances(list(reversed(trials))[::-1])
    assert first == second
    assert first is not None and set(first) == {"a", "b", "kind"}
    assert abs(sum(first.values()) - 1.0) < 1e-9
    assert list(first)[0] == "a"
    assert first["a"] > 0.8 > first["b"]
    assert first["a"] > 5 * first["kind"]


def test_param_importance_mixed_params():
    # Families with different parameter sets, None values, and non-COMPLETE trials ignored.
    trials = synthetic_trials(20)
    for i, trial in enumerate(trials):
        if i % 2:
            trial["params"] = {"a": trial["params"]["a"], "depth": None if i % 3 else 4}
        if i == 0:
            trial["state"] = "PRUNED"
            trial["score"] = 1e6
    result = plots.param_importances(trials)
    assert result is not None and list(result)[0] == "a"
    assert result == plots.param_importances(trials)


# --------------------------------------------------------------------------------------- threads


def test_concurrent_plotting(tmp_path):
    """Every kind of plot, two at a time from two threads (each figure is owned by its call)."""
    y_bin, proba_bin = binary_data()
    y_multi, proba_multi = multiclass_data()
    trials = synthetic_trials(12)
    jobs = [
        (plots.feature_importance_plot, ({f"f{i}": float(i) for i in range(20)},)),
        (plots.confusion_matrix_plot, (y_multi, proba_multi.argmax(1), list("abcd"))),
        (plots.roc_curve_plot, (y_bin, proba_bin, ["0", "1"])),
        (plots.residual_plot, (proba_bin, y_bin)),
        (plots.cv_scores_plot, ({"m1": [0.1, 0.2, 0.3], "m2": [0.2, 0.2, 0.4]}, "auc")),
        (plots.optimization_history_plot, (trials, "auc", "maximize")),
        (plots.param_importance_plot, (trials,)),
        (plots.selected_features_plot, (["a", "b"], {"c": "constant"})),
    ]

    def draw(i: int) -> Path | None:
        fn, args = jobs[i]
        return fn(*args, tmp_path / f"{i}.png")

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(draw, range(len(jobs))))
    assert all(p == tmp_path / f"{i}.png" for i, p in enumerate(results))
    for p in results:
        png_size(p)

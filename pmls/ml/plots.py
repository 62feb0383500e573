"""Diagnostic plots of a training run, as PNG files: pure (no MLflow, database or Temporal).

Every function draws one figure, writes it as a PNG to the given path (parent folders are created,
the file is written under a temporary name and moved into place) and returns that path as a
``Path``. Plots are diagnostics and must never fail a run: on empty or degenerate input the
function returns ``None`` without writing anything, and any unexpected error is logged and also
answered with ``None``.

Thread safety: figures are built with the object-oriented API (``matplotlib.figure.Figure`` drawn by
an explicit ``FigureCanvasAgg``), never through ``pyplot``, so no global figure registry is touched
and each call owns its figure; activities can plot from worker threads. User-supplied text (feature
names, class labels, parameter names) has its ``$`` escaped so that it is never parsed as mathtext.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np

if "matplotlib.pyplot" not in sys.modules:  # never switch (and so close the figures of) a live pyplot
    matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

log = logging.getLogger(__name__)

DPI = 110
MAX_LABEL = 40  # characters of a name shown on an axis
MAX_ROC_CLASSES = 10
MAX_CV_CANDIDATES = 40
MAX_TABLE_ROWS = 40
ANNOTATE_MAX_CLASSES = 20  # confusion matrices larger than this are not annotated per cell
RF_TREES = 64
RF_SEED = 0
MIN_IMPORTANCE_TRIALS = 4

PathLike = str | os.PathLike[str]
F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------------------------- helpers


def _never_raise(fn: F) -> F:
    """A plot that cannot be drawn is logged and skipped (None), never an error of the run."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Path | None:
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - a diagnostic must not fail training
            log.warning("plot %s failed; skipped", fn.__name__, exc_info=True)
            return None

    return wrapper  # type: ignore[return-value]


def _text(value: Any, limit: int = MAX_LABEL) -> str:
    """A label safe to draw: a string, at most ``limit`` characters, with no mathtext."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            fig.tight_layout()
        except Exception:  # noqa: BLE001 - a layout that cannot be tightened is still a plot
            log.debug("tight_layout failed", exc_info=True)
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
        os.replace(tmp, out)
    finally:
        fig.clear()
        if tmp.exists():
            tmp.unlink(missing_ok=True)
    return out


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def _codes(y: Any, labels: Sequence[Any]) -> np.ndarray:
    """Class codes 0..K-1 (-1 where unknown) from codes, class values, or a probability matrix."""
    arr = np.asarray(y)
    if arr.ndim == 2:
        return arr.argmax(axis=1).astype(np.int64) if arr.shape[1] else np.full(len(arr), -1)
    arr = arr.reshape(-1)
    k = len(labels)
    if arr.dtype.kind in "biuf":
        numbers = arr.astype(np.float64)
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        if whole.all() and (numbers >= 0).all() and (numbers < k).all():
            return numbers.astype(np.int64)
    index = {str(label): i for i, label in enumerate(labels)}
    return np.array([index.get(str(v), -1) for v in arr.tolist()], dtype=np.int64)


def _class_names(y_true: Any, y_pred: Any, labels: Sequence[Any] | None) -> list[str]:
    if labels:
        return [str(label) for label in labels]
    values = [np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)]
    return sorted({str(v) for part in values for v in part.tolist()})


def _palette(n: int) -> list[Any]:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# --------------------------------------------------------------------------------------------- plots


@_never_raise
def feature_importance_plot(importance: dict[str, float], path: PathLike, top: int = 25) -> Path | None:
    """Horizontal bars of the ``top`` largest importances, the largest on top."""
    items = [(str(name), v) for name, raw in (importance or {}).items() if (v := _finite(raw)) is not None]
    if not items or top < 1:
        return None
    items.sort(key=lambda item: (-item[1], item[0]))
    shown = items[:top][::-1]  # barh draws bottom-up
    names = [_text(name) for name, _ in shown]
    values = [value for _, value in shown]

    fig = _new_figure(8.0, max(2.5, 0.3 * len(shown) + 1.3))
    ax = fig.add_subplot()
    ax.barh(range(len(shown)), values, color="#4C72B0")
    ax.set_yticks(range(len(shown)), names, fontsize=9)
    ax.set_xlabel("importance")
    ax.axvline(0.0, color="black", linewidth=0.8)
    suffix = f" (top {len(shown)} of {len(items)})" if len(items) > len(shown) else ""
    ax.set_title(f"Feature importance{suffix}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


@_never_raise
def confusion_matrix_plot(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list, path: PathLike, normalize: bool = True
) -> Path | None:
    """Confusion matrix, rows = true class, columns = predicted; cells show count and row share.

    ``y_true``/``y_pred`` are class codes 0..K-1 indexing ``labels`` (the original class values),
    or the class values themselves; ``y_pred`` may also be a (n, K) probability matrix. Colours are
    the row shares when ``normalize`` (so rare classes are as visible as common ones), else counts.
    """
    names = _class_names(y_true, y_pred, labels)
    if not names:
        return None
    t = _codes(y_true, names)
    p = _codes(y_pred, names)
    if len(t) == 0 or len(t) != len(p):
        return None
    known = (t >= 0) & (p >= 0)
    t, p = t[known], p[known]
    if len(t) == 0:
        return None
    k = len(names)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (t, p), 1)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros((k, k)), where=totals > 0)
    shade = shares if normalize else counts.astype(np.float64)

    side = min(16.0, max(4.5, 0.6 * k + 2.5))
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, shade.max()))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row share" if normalize else "count")
    ticks = [_text(name, 25) for name in names]
    tick_size = 9 if k <= 15 else 7
    ax.set_xticks(
        range(k), ticks, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center", fontsize=tick_size
    )
    ax.set_yticks(range(k), ticks, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if k <= ANNOTATE_MAX_CLASSES:
        limit = 1.0 if normalize else max(1.0, shade.max())
        for i in range(k):
            for j in range(k):
                dark = shade[i, j] > 0.55 * limit
                ax.text(
                    j,
                    i,
                    f"{counts[i, j]}\n{shares[i, j]:.0%}",
                    ha="center",
                    va="center",
                    fontsize=9 if k <= 8 else 7,
                    color="white" if dark else "black",
                )
    accuracy = float(np.trace(counts)) / float(counts.sum())
    ax.set_title(f"Confusion matrix (n={counts.sum()}, accuracy {accuracy:.3f})")
    return _save(fig, path)


@_never_raise
def roc_curve_plot(y_true: np.ndarray, proba: np.ndarray, labels: list, path: PathLike) -> Path | None:
    """ROC curve(s): binary, one curve of the positive class (``labels[1]``); multiclass, one-vs-rest
    per class (the ``MAX_ROC_CLASSES`` most frequent present ones) with their AUCs.

    ``proba`` is a binary model's P(class 1) as a vector, or a (n, K) matrix of class probabilities;
    ``y_true`` holds class codes 0..K-1 (or the class values of ``labels``).
    """
    from sklearn.metrics import auc, roc_curve

    scores = np.asarray(proba, dtype=np.float64)
    if scores.ndim == 1:
        scores = np.column_stack([1.0 - scores, scores])
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < 2:
        return None
    k = scores.shape[1]
    names = [str(label) for label in (labels or [])][:k]
    names += [str(i) for i in range(len(names), k)]
    y = _codes(y_true, names)
    if len(y) != len(scores):
        return None
    keep = (y >= 0) & np.isfinite(scores).all(axis=1)
    y, scores = y[keep], scores[keep]

    curves: list[tuple[str, np.ndarray, np.ndarray, float]] = []
    if k == 2:
        if len(np.unique(y)) < 2:
            return None
        fpr, tpr, _ = roc_curve(y == 1, scores[:, 1])
        curves.append((f"{_text(names[1], 30)} (AUC = {auc(fpr, tpr):.3f})", fpr, tpr, auc(fpr, tpr)))
        title = f"ROC curve (positive class: {_text(names[1], 30)}, n={len(y)})"
    else:
        present = [c for c in range(k) if 0 < (y == c).sum() < len(y)]
        if not present:
            return None
        present.sort(key=lambda c: (-(y == c).sum(), c))
        shown = sorted(present[:MAX_ROC_CLASSES])
        aucs = []
        for c in shown:
            fpr, tpr, _ = roc_curve(y == c, scores[:, c])
            value = auc(fpr, tpr)
            aucs.append(value)
            curves.append((f"{_text(names[c], 30)} (AUC = {value:.3f})", fpr, tpr, value))
        note = f" of the {len(shown)} most frequent of {k} classes" if len(shown) < k else ""
        title = f"ROC one-vs-rest (mean AUC {np.mean(aucs):.3f}{note})"

    fig = _new_figure(6.5, 5.5)
    ax = fig.add_subplot()
    colours = _palette(len(curves))
    for (label, fpr, tpr, _), colour in zip(curves, colours, strict=True):
        ax.plot(fpr, tpr, color=colour, linewidth=1.8, label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1.0, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


@_never_raise
def residual_plot(y_true: np.ndarray, y_pred: np.ndarray, path: PathLike) -> Path | None:
    """Two panels: predicted vs actual with the identity line; residual vs predicted with zero."""
    actual = np.asarray(y_true, dtype=np.float64).reshape(-1)
    predicted = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if len(actual) == 0 or len(actual) != len(predicted):
        return None
    keep = np.isfinite(actual) & np.isfinite(predicted)
    actual, predicted = actual[keep], predicted[keep]
    if len(actual) == 0:
        return None
    residual = actual - predicted
    rmse = float(np.sqrt(np.mean(residual**2)))
    spread = float(np.sum((actual - actual.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / spread if len(actual) > 1 and spread > 0 else None

    alpha = 0.7 if len(actual) <= 500 else max(0.15, 0.7 * math.sqrt(500 / len(actual)))
    fig = _new_figure(11.0, 4.8)
    left, right = fig.subplots(1, 2)
    left.scatter(actual, predicted, s=12, alpha=alpha, color="#4C72B0", edgecolors="none")
    low = float(min(actual.min(), predicted.min()))
    high = float(max(actual.max(), predicted.max()))
    if high == low:
        low, high = low - 1.0, high + 1.0
    left.plot([low, high], [low, high], linestyle="--", color="#C44E52", linewidth=1.2, label="y = x")
    left.set_xlabel("actual")
    left.set_ylabel("predicted")
    left.set_title("Predicted vs actual")
    left.legend(loc="upper left", fontsize=8)
    left.grid(alpha=0.3)

    right.scatter(predicted, residual, s=12, alpha=alpha, color="#55A868", edgecolors="none")
    right.axhline(0.0, linestyle="--", color="#C44E52", linewidth=1.2)
    right.set_xlabel("predicted")
    right.set_ylabel("residual (actual − predicted)")
    right.set_title("Residuals vs predicted")
    right.grid(alpha=0.3)
    fig.suptitle(f"Regression residuals (n={len(actual)}, RMSE {_fmt(rmse)}, R² {_fmt(r2)})")
    return _save(fig, path)


@_never_raise
def cv_scores_plot(scores: dict[str, list[float]], metric: str, path: PathLike) -> Path | None:
    """Per candidate (model family, trial) its fold scores as points coloured by fold, with the
    mean ± std: folds are identical across candidates, so fold k can be compared across them."""
    rows: list[tuple[str, list[tuple[int, float]]]] = []
    for name, values in (scores or {}).items():
        folds = [(i, v) for i, raw in enumerate(values or []) if (v := _finite(raw)) is not None]
        if folds:
            rows.append((str(name), folds))
    if not rows:
        return None
    total = len(rows)
    rows = rows[:MAX_CV_CANDIDATES]
    n_folds = max(i for _, folds in rows for i, _ in folds) + 1
    colours = _palette(n_folds)

    fig = _new_figure(max(6.0, min(18.0, 0.55 * len(rows) + 3.0)), 5.0)
    ax = fig.add_subplot()
    offsets = np.linspace(-0.18, 0.18, n_folds) if n_folds > 1 else np.zeros(1)
    labelled: set[int] = set()
    for x, (_, folds) in enumerate(rows):
        for i, value in folds:
            ax.scatter(
                x + offsets[i],
                value,
                s=22,
                color=colours[i],
                alpha=0.85,
                zorder=2,
                label=None if i in labelled else f"fold {i}",
            )
            labelled.add(i)
        values = np.array([v for _, v in folds])
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        ax.errorbar(
            x + 0.3,
            values.mean(),
            yerr=std,
            fmt="D",
            color="black",
            markersize=5,
            capsize=4,
            zorder=3,
            label="mean ± std" if x == 0 else None,
        )
    names = [_text(name, 30) for name, _ in rows]
    rotate = len(rows) > 4 or max(len(name) for name in names) > 12
    ax.set_xticks(
        range(len(rows)), names, rotation=35 if rotate else 0, ha="right" if rotate else "center", fontsize=9
    )
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel(_text(metric or "score"))
    suffix = f", first {len(rows)} of {total}" if total > len(rows) else ""
    ax.set_title(f"Cross-validation {_text(metric or 'score')} per candidate ({n_folds} folds{suffix})")
    ax.grid(axis="y", alpha=0.3)
    if n_folds <= 10:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _save(fig, path)


@_never_raise
def optimization_history_plot(trials: list[dict], metric: str, direction: str, path: PathLike) -> Path | None:
    """Scores of completed trials by trial number (pruned ones with a score as crosses), one colour
    per family when there are several, and the best-so-far line of the completed ones."""
    minimize = str(direction or "").lower().startswith("min")
    points: list[tuple[int, float, str, str]] = []  # number, score, state, family
    for position, trial in enumerate(trials or []):
        if not isinstance(trial, dict):
            continue
        state = str(trial.get("state", "")).upper().rsplit(".", 1)[-1]  # "TrialState.COMPLETE" too
        score = _finite(trial.get("score"))
        if state not in ("COMPLETE", "PRUNED") or score is None:
            continue
        number = trial.get("number")
        number = int(number) if _finite(number) is not None else position
        points.append((number, score, state, str(trial.get("family") or "")))
    complete = sorted((n, s) for n, s, state, _ in points if state == "COMPLETE")
    if not points:
        return None
    families = sorted({family for *_, family in points})
    several = len(families) > 1
    colours = dict(zip(families, _palette(len(families)), strict=True))

    fig = _new_figure(9.0, 5.0)
    ax = fig.add_subplot()
    for family in families:
        for state, marker, size in (("COMPLETE", "o", 26), ("PRUNED", "x", 26)):
            chosen = [(n, s) for n, s, st, fam in points if fam == family and st == state]
            if not chosen:
                continue
            label = (
                (_text(family, 30) if several else "completed")
                if state == "COMPLETE"
                else (f"{_text(family, 30)} (pruned)" if several else "pruned")
            )
            colour = colours[family] if several else ("#4C72B0" if state == "COMPLETE" else "grey")
            ax.scatter(
                [n for n, _ in chosen],
                [s for _, s in chosen],
                s=size,
                marker=marker,
                color=colour,
                alpha=0.8 if state == "COMPLETE" else 0.6,
                label=label,
                zorder=2,
            )
    if complete:
        numbers = np.array([n for n, _ in complete])
        values = np.array([s for _, s in complete])
        best = np.minimum.accumulate(values) if minimize else np.maximum.accumulate(values)
        ax.step(numbers, best, where="post", color="#C44E52", linewidth=1.8, label="best so far", zorder=3)
        best_text = f", best {_fmt(float(best[-1]))}"
    else:
        best_text = ""
    ax.set_xlabel("trial")
    ax.set_ylabel(_text(metric or "score"))
    pruned = sum(1 for *_, state, _ in points if state == "PRUNED")
    ax.set_title(
        f"Optimization history ({len(complete)} completed, {pruned} pruned, "
        f"{'minimize' if minimize else 'maximize'} {_text(metric or 'score')}{best_text})"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _save(fig, path)


def _encode_params(rows: list[dict[str, Any]]) -> tuple[np.ndarray, list[str], list[str]]:
    """A numeric design matrix from parameter dicts: numbers as they are (a missing value becomes a
    value below the range, so a tree can split it off), everything else one-hot. Returns the matrix,
    the parameter of each column, and the parameter names in first-seen order."""
    names: list[str] = []
    for row in rows:
        for name in row:
            if name not in names:
                names.append(name)
    columns: list[np.ndarray] = []
    owners: list[str] = []
    for name in names:
        values = [row.get(name) for row in rows]
        present = [v for v in values if v is not None]
        numeric = all(
            isinstance(v, int | float | np.integer | np.floating)
            and not isinstance(v, bool | np.bool_)
            and math.isfinite(float(v))
            for v in present
        )
        if present and numeric:
            column = np.array([np.nan if v is None else float(v) for v in values])
            low, high = np.nanmin(column), np.nanmax(column)
            column[np.isnan(column)] = low - (high - low) - 1.0
            columns.append(column)
            owners.append(name)
        else:
            keys = [repr(v) for v in values]
            for key in sorted(set(keys)):
                columns.append(np.array([k == key for k in keys], dtype=np.float64))
                owners.append(name)
    matrix = np.column_stack(columns) if columns else np.empty((len(rows), 0))
    return matrix, owners, names


def param_importances(trials: list[dict]) -> dict[str, float] | None:
    """Importance of each hyperparameter for the score of completed trials, normalised to sum to 1,
    largest first; None with fewer than MIN_IMPORTANCE_TRIALS usable trials or nothing to explain.

    A random forest (fixed seed, one thread: deterministic) regresses the score on the encoded
    parameters; a parameter's importance is the impurity importance summed over its columns. This is
    the idea of Optuna's fANOVA evaluator without needing a study.
    """
    from sklearn.ensemble import RandomForestRegressor

    rows: list[dict[str, Any]] = []
    target: list[float] = []
    for trial in trials or []:
        if not isinstance(trial, dict):
            continue
        state = str(trial.get("state", "COMPLETE")).upper().rsplit(".", 1)[-1]
        score = _finite(trial.get("score"))
        params = trial.get("params")
        if state != "COMPLETE" or score is None or not isinstance(params, dict) or not params:
            continue
        rows.append({str(k): v for k, v in params.items()})
        target.append(score)
    if len(rows) < MIN_IMPORTANCE_TRIALS:
        return None
    y = np.array(target)
    if np.ptp(y) == 0:
        return None
    matrix, owners, names = _encode_params(rows)
    varying = [j for j in range(matrix.shape[1]) if np.ptp(matrix[:, j]) > 0]
    if not varying:
        return None
    forest = RandomForestRegressor(
        n_estimators=RF_TREES, max_depth=64, min_samples_split=2, random_state=RF_SEED, n_jobs=1
    )
    forest.fit(matrix[:, varying], y)
    totals = dict.fromkeys(names, 0.0)
    for j, weight in zip(varying, forest.feature_importances_, strict=True):
        totals[owners[j]] += float(weight)
    whole = sum(totals.values())
    if not math.isfinite(whole) or whole <= 0:
        return None
    return dict(sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: (-kv[1], kv[0])))


@_never_raise
def param_importance_plot(trials: list[dict], path: PathLike, top: int = 15) -> Path | None:
    """Horizontal bars of ``param_importances`` (the ``top`` largest), the largest on top; None with
    fewer than MIN_IMPORTANCE_TRIALS completed trials."""
    importances = param_importances(trials)
    if not importances or top < 1:
        return None
    used = sum(
        1
        for t in trials
        if isinstance(t, dict)
        and str(t.get("state", "COMPLETE")).upper().rsplit(".", 1)[-1] == "COMPLETE"
        and _finite(t.get("score")) is not None
        and isinstance(t.get("params"), dict)
        and t.get("params")
    )
    items = list(importances.items())
    shown = items[:top][::-1]
    fig = _new_figure(8.0, max(2.5, 0.35 * len(shown) + 1.4))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(shown)), [v for _, v in shown], color="#8172B2")
    ax.set_yticks(range(len(shown)), [_text(name) for name, _ in shown], fontsize=9)
    for bar, (_, value) in zip(bars, shown, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(v for _, v in shown) * 1.15 or 1.0)
    ax.set_xlabel("importance (share of explained score variance)")
    suffix = f", top {len(shown)} of {len(items)}" if len(items) > len(shown) else ""
    ax.set_title(f"Hyperparameter importance ({used} completed trials{suffix})")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


@_never_raise
def selected_features_plot(kept: list[str], dropped: dict[str, str], path: PathLike) -> Path | None:
    """A two-column table as an image: the kept features, and the dropped ones with their reason;
    long lists end with "… and N more"."""
    kept = [str(name) for name in (kept or [])]
    dropped = {str(k): str(v) for k, v in (dropped or {}).items()}
    if not kept and not dropped:
        return None

    def clip(lines: list[str]) -> list[str]:
        if len(lines) <= MAX_TABLE_ROWS:
            return lines
        return lines[: MAX_TABLE_ROWS - 1] + [f"… and {len(lines) - MAX_TABLE_ROWS + 1} more"]

    left = clip([_text(name, 45) for name in kept]) or ["(none)"]
    right = clip([f"{_text(name, 32)}: {_text(reason, 40)}" for name, reason in dropped.items()]) or [
        "(none)"
    ]
    rows = max(len(left), len(right))
    line = 0.22  # inches per row
    fig = _new_figure(11.0, 0.9 + line * (rows + 1))
    height = fig.get_figheight()
    top = 1.0 - 0.55 / height
    step = line / height
    fig.text(
        0.02,
        1.0 - 0.15 / height,
        f"Feature selection: {len(kept)} kept, {len(dropped)} dropped",
        fontsize=13,
        va="top",
    )
    fig.text(0.02, top, f"Kept features ({len(kept)})", fontsize=11, fontweight="bold", va="top")
    fig.text(0.42, top, f"Dropped features ({len(dropped)})", fontsize=11, fontweight="bold", va="top")
    for i, text in enumerate(left):
        fig.text(0.02, top - (i + 1.3) * step, text, fontsize=9, family="monospace", va="top")
    for i, text in enumerate(right):
        fig.text(
            0.42,
            top - (i + 1.3) * step,
            text,
            fontsize=9,
            family="monospace",
            va="top",
            color="black" if text.startswith("…") or text == "(none)" else "#8B0000",
        )
    bottom = top - (rows + 1.3) * step
    fig.add_artist(Line2D([0.40, 0.40], [bottom, top], color="lightgrey", linewidth=1.0))
    return _save(fig, path)


__all__ = [
    "confusion_matrix_plot",
    "cv_scores_plot",
    "feature_importance_plot",
    "optimization_history_plot",
    "param_importance_plot",
    "param_importances",
    "residual_plot",
    "roc_curve_plot",
    "selected_features_plot",
]

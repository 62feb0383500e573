"""Ensembles of the best trials, built from their out-of-fold (OOF) predictions.

Three builders share one convention for a member's "scores": an n x k probability matrix for
classification (rows sum to 1), an (n,) vector of values for regression.

* ``caruana``: greedy forward selection with replacement (Caruana et al., 2004) on any metric;
* ``blend_weights``: simplex weights (softmax parametrisation) minimising log loss / RMSE with JAX;
* ``fit_stacker``: a logistic / ridge meta model on the members' log-odds or values.

All three learn on the held-out rows that every member covers: the members' out-of-fold predictions over
the training period (time-series CV leaves its earliest block uncovered, as NaN) pooled with their
predictions on the validation period. ``choose_ensemble`` scores each method on predictions it did not
learn from (cross-fitted over parts of those rows) beside the best single member, and keeps the best;
ties go to the simpler method.
``pmls.ml.ensemble_model`` serves the winner behind the zoo model's public surface, saved without pickles.

Pure ML: no Temporal, no database. JAX is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, Literal

import numpy as np

from pmls.contracts import Task
from pmls.ml.errors import DataError
from pmls.ml.metrics import HIGHER_IS_BETTER, PROBA_EPS, compute_metrics

# JAX must not grab most of a GPU's memory for two small arrays; set before jax is first imported.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

Method = Literal["single", "caruana", "blend", "stack"]
METHODS: tuple[str, ...] = ("single", "caruana", "blend", "stack")  # simplest first: breaks ties
TIE_TOLERANCE = 1e-4  # relative: two single models closer than this on the metric are a tie
LOG_EPS = 1e-7  # floor for probabilities before a log: keeps meta features and losses finite
MIN_WEIGHT = 1e-3  # weights below this are dropped from a weighted ensemble (see _fit_method)
CROSSFIT_FOLDS = 5  # parts of the pooled held-out rows that each method is scored on, learnt on the rest


# --- shared helpers -------------------------------------------------------------------------------


def coverage(oof: Sequence[np.ndarray]) -> np.ndarray:
    """Rows where every member has a finite OOF prediction (the only rows the builders learn on)."""
    if not oof:
        return np.zeros(0, dtype=bool)
    finite = [np.isfinite(np.asarray(o, dtype=np.float64)).reshape(len(o), -1).all(axis=1) for o in oof]
    return np.logical_and.reduce(finite)


def _stacked(scores: Sequence[np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
    """(members, n[, k]) float64, optionally restricted to ``rows``."""
    arrays = np.stack([np.asarray(s, dtype=np.float64) for s in scores])
    return arrays if rows is None else arrays[:, rows]


def _mix(weights: np.ndarray, stacked: np.ndarray) -> np.ndarray:
    # A convex combination of probability rows is itself a probability row: no renormalising needed.
    return np.tensordot(np.asarray(weights, dtype=np.float64), stacked, axes=1)


def metric_value(task: Task, y: np.ndarray, scores: np.ndarray, metric: str) -> float:
    """The metric's value, NaN when it is undefined on these rows (e.g. AUC with one class)."""
    value = compute_metrics(task, y, scores).get(metric)
    return math.nan if value is None else float(value)


def _search_value(task: Task, y: np.ndarray, scores: np.ndarray, metric: str) -> float:
    """``metric_value`` for search loops: Caruana scores hundreds of blends, and compute_metrics
    computes every classification metric through sklearn's input checks, slow in a loop. The common
    metrics are computed directly, the same way compute_metrics does; the rest go through it.
    """
    if task is Task.REGRESSION or metric not in ("log_loss", "accuracy", "brier", "roc_auc"):
        return metric_value(task, y, scores, metric)
    proba = np.clip(scores, PROBA_EPS, 1.0)
    proba /= proba.sum(axis=1, keepdims=True)  # as compute_metrics does before any metric
    y = np.asarray(y).astype(np.int64)
    if metric == "log_loss":
        return float(-np.mean(np.log(proba[np.arange(len(y)), y])))
    if metric == "accuracy":
        return float(np.mean(proba.argmax(axis=1) == y))
    if metric == "brier" and proba.shape[1] == 2:
        return float(np.mean((proba[:, 1] - y) ** 2))
    if metric == "roc_auc" and proba.shape[1] == 2 and len(np.unique(y)) == 2:
        return _binary_auc(y, proba[:, 1])
    return metric_value(task, y, scores, metric)


def _binary_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties: equal to sklearn's roc_auc_score, 20x faster."""
    from scipy.stats import rankdata

    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((rankdata(p)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _loss(metric: str, value: float) -> float:
    """Smaller is better, whatever the metric's direction; an undefined value loses to everything."""
    if not math.isfinite(value):
        return math.inf
    return -value if metric in HIGHER_IS_BETTER else value


def _check_members(oof: Sequence[np.ndarray], y: np.ndarray) -> None:
    if not oof:
        raise DataError("ensemble", "no members to ensemble")
    shapes = {np.shape(o) for o in oof}
    if len(shapes) != 1 or next(iter(shapes))[0] != len(y):
        raise DataError("ensemble", f"members' scores must share one shape with {len(y)} rows, got {shapes}")


def _covered(oof: Sequence[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The members' scores and targets on covered rows; an error when no row is covered."""
    _check_members(oof, y)
    mask = coverage(oof)
    if not mask.any():
        raise DataError("ensemble", "no row has an out-of-fold prediction from every member")
    return _stacked(oof, mask), np.asarray(y)[mask]


# --- Caruana: greedy selection with replacement ---------------------------------------------------


def caruana(
    oof: list[np.ndarray], y: np.ndarray, task: Task, metric: str, *, rounds: int = 50, init: int = 1
) -> np.ndarray:
    """Weights (>= 0, sum 1): each round adds the member that most improves ``metric`` on the blend.

    Starts from the ``init`` best members and returns the best blend seen over all rounds, never one
    worse than the best single member (so a metric that only gets worse by mixing yields one-hot).
    """
    stacked, y = _covered(oof, y)
    singles = np.array([_loss(metric, _search_value(task, y, s, metric)) for s in stacked])
    best_single = int(np.argmin(singles))  # argmin keeps the first of equals: deterministic
    counts = np.zeros(len(stacked))
    counts[np.argsort(singles, kind="stable")[: max(1, min(init, len(stacked)))]] = 1.0
    best_counts, best = _one_hot(len(stacked), best_single), singles[best_single]
    start = _loss(metric, _search_value(task, y, _mix(counts / counts.sum(), stacked), metric))
    if start < best:
        best_counts, best = counts.copy(), start
    for _ in range(rounds):
        counts, value = _caruana_step(counts, stacked, y, task, metric)
        if value < best:  # strict: a tie keeps the smaller, earlier ensemble
            best_counts, best = counts.copy(), value
    return best_counts / best_counts.sum()


def _caruana_step(
    counts: np.ndarray, stacked: np.ndarray, y: np.ndarray, task: Task, metric: str
) -> tuple[np.ndarray, float]:
    """Add the one member (with replacement) whose extra vote gives the best blend."""
    trials = []
    for j in range(len(stacked)):
        trial = counts.copy()
        trial[j] += 1.0
        trials.append(_loss(metric, _search_value(task, y, _mix(trial / trial.sum(), stacked), metric)))
    j = int(np.argmin(trials))
    counts = counts.copy()
    counts[j] += 1.0
    return counts, trials[j]


def _one_hot(m: int, index: int) -> np.ndarray:
    out = np.zeros(m)
    out[index] = 1.0
    return out


# --- JAX blend on the simplex ---------------------------------------------------------------------


def blend_weights(
    oof: list[np.ndarray], y: np.ndarray, task: Task, *, steps: int = 300, lr: float = 0.05, seed: int = 0
) -> np.ndarray:
    """Simplex weights minimising log loss (classification) or RMSE (regression) of the blend.

    Weights are softmax(theta), so every step stays on the simplex without projection. Adam on the
    jit-compiled loss; the best iterate is returned, so the result never loses to the (near-uniform)
    start.
    """
    import jax
    import jax.numpy as jnp

    stacked, y = _covered(oof, y)
    target, data, row_weight = _blend_inputs(task, stacked, y)
    value_and_grad, adam = _blend_functions(task is not Task.REGRESSION)
    # A tiny seeded jitter instead of exact zeros: same start for the same seed, no ties by symmetry.
    theta = 0.01 * jax.random.normal(jax.random.PRNGKey(seed), (len(stacked),), dtype=jnp.float32)
    m, v = jnp.zeros_like(theta), jnp.zeros_like(theta)
    best_loss, best_theta = math.inf, theta
    for t in range(1, steps + 1):
        loss, grad = value_and_grad(theta, data, target, row_weight)
        if float(loss) < best_loss:  # loss belongs to theta before this step's update
            best_loss, best_theta = float(loss), theta
        theta, m, v = adam(theta, m, v, grad, jnp.float32(t), jnp.float32(lr))
    return _softmax_np(np.asarray(best_theta, dtype=np.float64))


def _blend_inputs(task: Task, stacked: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """(target, data, row weights) as float32, rows zero-padded to a power of two.

    jit compiles once per shape; padding (with zero weight) lets one compilation serve every data
    set of a similar size instead of one per row count. Classification needs only each member's
    probability of the true class, so its data is (members, rows) whatever the number of classes.
    """
    if task is Task.REGRESSION:
        target, data = y.astype(np.float64), stacked
    else:
        target = np.zeros(len(y))
        data = np.take_along_axis(stacked, y.astype(np.int64)[None, :, None], axis=2)[..., 0]
    n = len(y)
    size = max(256, 1 << (n - 1).bit_length())
    padded = np.ones((len(data), size))  # padding probability 1: log 1 = 0, so finite either way
    padded[:, :n] = data
    weight = np.zeros(size)
    weight[:n] = 1.0 / n
    target = np.pad(target, (0, size - n))
    return target.astype(np.float32), padded.astype(np.float32), weight.astype(np.float32)


@cache
def _blend_functions(classification: bool):
    """(jit(value_and_grad(loss)), jit(adam update)), built once per process and per objective."""
    import jax
    import jax.numpy as jnp

    def loss(theta, data, target, row_weight):  # row_weight: 1/n on real rows, 0 on padding
        blended = jnp.tensordot(jax.nn.softmax(theta), data, axes=1)
        if classification:  # data holds P(true class): mean negative log-likelihood
            return -jnp.sum(row_weight * jnp.log(jnp.clip(blended, LOG_EPS, 1.0)))
        return jnp.sqrt(jnp.sum(row_weight * (blended - target) ** 2) + 1e-12)  # eps: finite gradient at 0

    def adam(theta, m, v, grad, t, lr, b1=0.9, b2=0.999, eps=1e-8):
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        step = lr * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)
        return theta - step, m, v

    return jax.jit(jax.value_and_grad(loss)), jax.jit(adam)


def _softmax_np(theta: np.ndarray) -> np.ndarray:
    z = np.exp(theta - theta.max())
    return z / z.sum()


# --- stacking -------------------------------------------------------------------------------------


@dataclass
class Stacker:
    """A linear meta model: logistic (binary / multinomial) or ridge, stored as plain numbers.

    Predicting needs only numpy, so a served ensemble never unpickles a scikit-learn estimator.
    """

    task: Task
    coef: np.ndarray  # (outputs, features): 1 output for binary and regression, k for multiclass
    intercept: np.ndarray  # (outputs,)
    classes: list[int]  # classes the meta model saw; the others get probability ~0
    num_classes: int | None
    n_members: int

    def predict_scores(self, member_scores: list[np.ndarray]) -> np.ndarray:
        if len(member_scores) != self.n_members:
            raise DataError(
                "ensemble", f"the stacker takes {self.n_members} members, got {len(member_scores)}"
            )
        z = meta_features(self.task, member_scores) @ self.coef.T + self.intercept
        if self.task is Task.REGRESSION:
            return z[:, 0]
        if self.task is Task.BINARY:
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p, p])
        return self._full_proba(_softmax_rows(z))

    def _full_proba(self, seen: np.ndarray) -> np.ndarray:
        # Classes missing from the covered rows still need a column: tiny, then renormalised.
        out = np.full((len(seen), int(self.num_classes or len(self.classes))), LOG_EPS)
        out[:, self.classes] = seen
        return out / out.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task.value,
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "n_members": self.n_members,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stacker:
        return cls(
            Task(data["task"]),
            np.asarray(data["coef"], dtype=np.float64),
            np.asarray(data["intercept"], dtype=np.float64),
            [int(c) for c in data["classes"]],
            data["num_classes"],
            int(data["n_members"]),
        )


def meta_features(task: Task, member_scores: Sequence[np.ndarray]) -> np.ndarray:
    """Regression: the values. Binary: one log-odds column per member (the other is redundant).

    Multiclass: each member's log-probabilities. Logs make a linear meta model a weighted geometric
    blend, which calibrates better than averaging raw probabilities.
    """
    stacked = _stacked(member_scores)
    if task is Task.REGRESSION:
        return stacked.T
    logp = np.log(np.clip(stacked, LOG_EPS, 1.0))
    if task is Task.BINARY:
        return (logp[:, :, 1] - logp[:, :, 0]).T
    return np.concatenate(list(logp), axis=1)


def fit_stacker(
    oof: list[np.ndarray], y: np.ndarray, task: Task, *, seed: int = 0, strength: float = 1.0
) -> Stacker:
    """Fit the meta model on covered rows only (``strength``: L2 penalty; C = 1 / strength)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    _check_members(oof, y)
    mask = coverage(oof)
    X, y = meta_features(task, [np.asarray(o)[mask] for o in oof]), np.asarray(y)[mask]
    if task is Task.REGRESSION:
        if len(y) == 0:
            raise DataError("ensemble", "no row has an out-of-fold prediction from every member")
        ridge = Ridge(alpha=strength).fit(X, y.astype(np.float64))
        return Stacker(task, np.atleast_2d(ridge.coef_), np.atleast_1d(ridge.intercept_), [], None, len(oof))
    classes = np.unique(y.astype(np.int64))
    if len(classes) < 2:
        raise DataError("ensemble", "stacking needs at least two classes among the covered rows")
    model = LogisticRegression(C=1.0 / strength, max_iter=2000, random_state=seed).fit(X, y.astype(np.int64))
    num_classes = int(np.asarray(oof[0]).shape[1])
    return Stacker(
        task,
        model.coef_.astype(np.float64),
        model.intercept_.astype(np.float64),
        [int(c) for c in model.classes_],
        num_classes,
        len(oof),
    )


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- choosing and combining -----------------------------------------------------------------------


@dataclass
class EnsembleChoice:
    """The winning method and what it needs to combine member scores (JSON-ready)."""

    method: Method
    weights: list[float] | None  # aligned with ``members``; None for stacking
    stacker: dict | None  # Stacker.to_dict() for stacking
    members: list[int]  # indices into the candidate list handed to choose_ensemble
    validation_score: float  # the method's held-out score on the validation period
    scores: dict[str, float]  # held-out score of every method tried ("single": the best member)
    heldout_score: float = math.nan  # the method's score over every held-out row (OOF + validation)
    validation_scores: dict[str, float] = field(default_factory=dict)  # every method on validation alone
    heldout_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleChoice:
        return cls(**data)


def best_single(metric: str, scores: Sequence[float], costs: Sequence[float] | None = None) -> int:
    """The best candidate by score; candidates within ``TIE_TOLERANCE`` of it tie, and the cheapest wins.

    ``costs`` are seconds to fit and predict (the faster model is also the smaller one in this zoo:
    fewer rounds, trees or epochs). Without costs a tie keeps the earliest candidate.
    """
    losses = [_loss(metric, s) for s in scores]
    top = min(losses)
    if not math.isfinite(top):
        return 0
    margin = TIE_TOLERANCE * max(abs(top), 1e-12)
    tied = [i for i, loss in enumerate(losses) if loss <= top + margin]
    if costs is None:
        return tied[0]
    return min(tied, key=lambda i: (costs[i], i))


def choose_ensemble(
    oof: list[np.ndarray],
    y_oof: np.ndarray,
    valid_scores: list[np.ndarray],
    y_valid: np.ndarray,
    task: Task,
    metric: str,
    *,
    seed: int = 0,
    cv_scores: Sequence[float | None] | None = None,
    costs: Sequence[float] | None = None,
    folds: int = CROSSFIT_FOLDS,
) -> EnsembleChoice:
    """Judge every method on all held-out predictions at once: the members' out-of-fold predictions over
    the training rows and their predictions on the validation period, pooled.

    Weights and stackers are learnt on those pooled rows; each method is scored on predictions it did not
    learn from (cross-fitted over ``folds`` parts of the pooled rows), so a method that only overfits the
    rows it was fitted on loses. The best of the methods wins, the best single model included (chosen by its
    CV score on the job's folds when every candidate has one, else on the pooled rows; near-ties go to the
    cheaper model). Ties go to the simpler method. Each method's score on the validation rows alone is kept
    as a check (``validation_scores``).
    """
    if len(valid_scores) != len(oof) or not oof:
        raise DataError("ensemble", f"{len(oof)} OOF arrays but {len(valid_scores)} validation arrays")
    pooled = [
        np.concatenate([np.asarray(o, dtype=np.float64), np.asarray(v, dtype=np.float64)])
        for o, v in zip(oof, valid_scores, strict=True)
    ]
    y = np.concatenate([np.asarray(y_oof), np.asarray(y_valid)])
    in_valid = np.arange(len(y)) >= len(y_oof)
    rows = coverage(pooled)
    singles = [metric_value(task, y[rows], p[rows], metric) for p in pooled]
    by_cv = cv_scores is not None and all(v is not None and math.isfinite(v) for v in cv_scores)
    best = best_single(metric, [float(v) for v in cv_scores] if by_cv else singles, costs)  # type: ignore[union-attr]
    heldout = {"single": pooled[best]}
    fitted: dict[str, EnsembleChoice] = {
        "single": EnsembleChoice("single", [1.0], None, [best], math.nan, {})
    }
    if len(oof) >= 2:
        for method in METHODS[1:]:
            try:
                fitted[method] = _fit_method(method, [p[rows] for p in pooled], y[rows], task, metric, seed)
                heldout[method] = _crossfit(method, pooled, y, rows, task, metric, seed, folds)
            except DataError:  # e.g. one class among the pooled rows: that method is simply not a candidate
                fitted.pop(method, None)
    scores = {m: metric_value(task, y[rows], p[rows], metric) for m, p in heldout.items()}
    valid_rows = rows & in_valid
    checks = {m: metric_value(task, y[valid_rows], p[valid_rows], metric) for m, p in heldout.items()}
    winner = min(fitted, key=lambda m: (_loss(metric, scores[m]), METHODS.index(m)))
    choice = fitted[winner]
    choice.scores, choice.validation_scores = scores, checks
    choice.heldout_score, choice.validation_score = scores[winner], checks[winner]
    choice.heldout_rows = int(rows.sum())
    choice.validation_predictions = heldout[winner][in_valid]  # type: ignore[attr-defined]
    return choice


def _fit_method(
    method: str, scores: list[np.ndarray], y: np.ndarray, task: Task, metric: str, seed: int
) -> EnsembleChoice:
    """Learn ``method`` on fully covered rows."""
    if method == "stack":
        return EnsembleChoice(
            "stack",
            None,
            fit_stacker(scores, y, task, seed=seed).to_dict(),
            list(range(len(scores))),
            math.nan,
            {},
        )
    weights = (
        caruana(scores, y, task, metric) if method == "caruana" else blend_weights(scores, y, task, seed=seed)
    )
    # A member kept for a sliver of weight costs a full refit: drop it (softmax weights are never 0).
    members = [int(i) for i in np.flatnonzero(weights >= MIN_WEIGHT)] or [int(np.argmax(weights))]
    kept = [float(w) for w in weights[members] / weights[members].sum()]
    return EnsembleChoice(method, kept, None, members, math.nan, {})  # type: ignore[arg-type]


def _crossfit(
    method: str,
    pooled: list[np.ndarray],
    y: np.ndarray,
    rows: np.ndarray,
    task: Task,
    metric: str,
    seed: int,
    folds: int,
) -> np.ndarray:
    """Held-out predictions of ``method`` on the covered rows: each part predicted by the method learnt on
    the other parts (NaN elsewhere)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    index = np.flatnonzero(rows)
    out = np.full_like(pooled[0], np.nan)
    classify = task is not Task.REGRESSION
    if classify:  # no more parts than the rarest class has rows
        counts = np.bincount(y[index].astype(np.int64))
        folds = max(2, min(folds, int(counts[counts > 0].min())))
    splitter = (StratifiedKFold if classify else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    for learn, held in splitter.split(index, y[index] if classify else None):
        choice = _fit_method(method, [p[index[learn]] for p in pooled], y[index[learn]], task, metric, seed)
        out[index[held]] = combine([p[index[held]] for p in pooled], choice, task)
    return out


def combine(member_scores: list[np.ndarray], choice: EnsembleChoice, task: Task) -> np.ndarray:
    """The ensemble's scores from its members' scores.

    ``member_scores`` is either aligned with ``choice.members`` (what a refitted ensemble holds) or the
    full candidate list that ``choose_ensemble`` saw; the two cannot be confused, since members are
    sorted distinct indices into the full list.
    """
    if len(member_scores) != len(choice.members):
        member_scores = [member_scores[i] for i in choice.members]
    if choice.method == "stack":
        if choice.stacker is None:
            raise DataError("ensemble", "a stacking choice without its stacker")
        return Stacker.from_dict(choice.stacker).predict_scores(list(member_scores))
    weights = np.asarray(choice.weights if choice.weights is not None else [1.0] * len(member_scores))
    return _mix(weights / weights.sum(), _stacked(member_scores))

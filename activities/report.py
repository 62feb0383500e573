"""The pictures logged with each model: importances, confusion matrix and ROC or residuals, CV scores,
the optimisation history and parameter importances, and the selected features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pmls.contracts import Task
from pmls.contracts.workflow import RegisterModelInput
from pmls.ml import plots
from pmls.ml.prepared import higher_is_better


def make_plots(inp: RegisterModelInput, bundle, trials: list[dict], out: Path) -> list[Path]:
    trained, target = inp.trained, inp.request.dataset_config.target
    test = pl.read_parquet(inp.splits.test.uri)
    predicted = bundle.predict(test.drop(target).to_pandas())
    made = [
        plots.feature_importance_plot(trained.metrics.feature_importance, out / "feature_importance.png"),
        plots.selected_features_plot(
            trained.features, trained.dropped_features, out / "selected_features.png"
        ),
        plots.cv_scores_plot(_cv_scores(inp), trained.primary_metric, out / "cv_scores.png"),
    ]
    if trained.task is Task.REGRESSION:
        made.append(
            plots.residual_plot(
                test.get_column(target).to_numpy(), predicted["prediction"].to_numpy(), out / "residuals.png"
            )
        )
    else:
        classes = trained.classes or []
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index.get(v, -1) for v in test.get_column(target).to_list()])
        proba = np.column_stack([predicted[f"proba_{c}"].to_numpy() for c in classes])
        labels = [str(c) for c in classes]
        made.append(
            plots.confusion_matrix_plot(y, proba.argmax(axis=1), labels, out / "confusion_matrix.png")
        )
        made.append(plots.roc_curve_plot(y, proba, labels, out / "roc_curve.png"))
    if trials:
        history = [
            {
                "number": t["trial_number"],
                "state": t["state"],
                "score": t["performance_score"],
                "family": t.get("model_type"),
                "params": t["hyperparameters"],
            }
            for t in trials
        ]
        direction = "maximize" if higher_is_better(trained.primary_metric) else "minimize"
        made.append(
            plots.optimization_history_plot(
                history, trained.primary_metric, direction, out / "optimization_history.png"
            )
        )
        made.append(
            plots.param_importance_plot(
                [h for h in history if h["family"] == history[0]["family"]], out / "param_importances.png"
            )
        )
    return [p for p in made if p is not None]


def _cv_scores(inp: RegisterModelInput) -> dict[str, list[float]]:
    trained = inp.trained
    if trained.ensemble:
        return {c["model_type"]: [c["cv_mean"]] for c in trained.ensemble.get("candidates", [])}
    return {inp.request.model_type.value: trained.cv.scores} if trained.cv else {}

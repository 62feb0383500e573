"""Where the gap between the service's LIGHTGBM and the plain Optuna loop comes from, in process, on the time-ordered
sets of ``bench.quality`` (issue #10). Three experiments, each printing hidden-row scores side by side:

* ``rows``: the plain loop of ``bench.plain_loop`` tuned on the oldest ``--fractions`` of the visible rows (the
  service's training period is the oldest 70 %), then refit on every visible row with its rounds, scaled to the
  rows as the service scales them. Does tuning without the latest rows cost quality?
* ``pipeline``: the plain loop's best parameters fitted the plain loop's way (one refit on every visible row) and
  through the service's pipeline (``prepare``, the CV plan for the rounds, ``fit_final``'s refits, the bundle that
  serves). Is the gap in preparation and refits, or in the search's choice?
* ``judge``: the service's search replayed in process on the service's prepared data and plan (its space, TPE,
  portfolio), its trials scored by the service's ``cross_validate`` with its median pruner (``service``: each fold
  early-stopped on its own, judged at the round best on the folds' average since 2026-12-03, at each fold's own
  best round before) or by ``lgb.cv`` in lock-step (``lgb-cv``); the best trial through ``fit_final``.

``python -m bench.search_ablation judge --sets hotel_rates,txhousing --seeds 0,1,2 --budget 40``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import plain_loop
from bench.datasets import SETS
from bench.quality import Prepared as BenchSet
from pmls.contracts import DatasetConfig, ModelType, ValidationConfig

TIME_ORDERED = ("chicago", "txhousing", "hotel_rates", "flights")
MAX_ROUND_SCALE = 1.5  # as pmls.ml.final


def _refit_score(s: BenchSet, params: dict, rounds: int) -> float:
    import lightgbm as lgb

    f = s.f
    predicted = lgb.train(params, lgb.Dataset(f.X, f.y), num_boost_round=max(rounds, 1)).predict(f.X_hidden)
    if f.task.value == "binary":
        predicted = np.column_stack([1.0 - predicted, predicted])
    return s.score(predicted)


def rows(s: BenchSet, budget: float, seed: int, fractions: list[float]) -> None:
    f = s.f
    for fraction in fractions:
        n = int(round(len(f.y) * fraction))
        head = plain_loop.Frames(
            f.task, f.classes, f.X.iloc[:n], f.y[:n], f.X_hidden, f.y_hidden, f.time_ordered
        )
        found = plain_loop.search(head, budget, seed, 2)
        params, rounds, trials = found.params, found.rounds, found.trials
        scaled = int(round(rounds * min(MAX_ROUND_SCALE, len(f.y) / found.fold_rows)))
        print(
            f"{s.bs.name} seed {seed}: tuned on the oldest {fraction:.0%} ({n} rows, {trials} trials), refit on all "
            f"{len(f.y)}: {rounds} rounds {_refit_score(s, params, rounds):.4f}, "
            f"scaled {scaled} rounds {_refit_score(s, params, scaled):.4f}",
            flush=True,
        )


def _service_config(s: BenchSet) -> DatasetConfig:
    bs = s.bs
    return DatasetConfig(
        source=str(s.path("source")), target=bs.target, timestamp_column=bs.timestamp, entity_column=bs.entity
    )


def _service_score(s: BenchSet, prepared, cfg: DatasetConfig, params: dict, iterations: list[int]) -> float:
    from pmls.ml.bundle import load_bundle, save_bundle
    from pmls.ml.final import fit_final
    from pmls.ml.fitting import FitOptions

    opts = FitOptions.from_config(cfg, ModelType.LIGHTGBM, params, seed=0, num_threads=2)
    final = fit_final(prepared, opts, cv_iterations=iterations)
    directory = save_bundle(
        Path(tempfile.mkdtemp()) / "bundle",
        final=final,
        prepared=prepared,
        cfg=cfg,
        model_type=ModelType.LIGHTGBM,
        params=params,
    )
    out = load_bundle(directory).predict(s.hidden.drop(s.bs.target).to_pandas())
    if s.bs.task.value == "regression":
        return s.score(out["prediction"].to_numpy())
    return s.score(s.proba_from(out, "proba_"))


def _prepare(s: BenchSet, seed: int):
    from pmls.ml.data import prepare_splits
    from pmls.ml.prepared import prepare

    cfg = _service_config(s)
    return cfg, prepare(prepare_splits(s.bs.visible, cfg, seed=seed), cfg, ValidationConfig(), seed=seed)


def pipeline(s: BenchSet, budget: float, seed: int) -> None:
    from pmls.ml.fitting import FitOptions, cross_validate

    found = plain_loop.search(s.f, budget, seed, 2)
    params, rounds, trials = found.params, found.rounds, found.trials
    # The plain loop's tuned parameters under the service's names (min_data_in_leaf is min_child_samples there).
    tuned = ("learning_rate", "num_leaves", "feature_fraction", "bagging_fraction", "lambda_l1", "lambda_l2")
    service_params = {k: params[k] for k in tuned} | {"min_child_samples": params["min_data_in_leaf"]}
    cfg, prepared = _prepare(s, seed)
    opts = FitOptions.from_config(cfg, ModelType.LIGHTGBM, service_params, seed=seed, num_threads=2)
    cv = cross_validate(prepared, opts)
    service = _service_score(s, prepared, cfg, service_params, cv.best_iterations)
    encoded = {
        f"{share:.0%}": _encoded_score(s, params, rounds, share) for share in (1.0, prepared_share(prepared))
    }
    print(
        f"{s.bs.name} seed {seed}: the plain loop's best ({trials} trials, lr {params['learning_rate']:.3f}, "
        f"{params['num_leaves']} leaves) refit the plain way {_refit_score(s, params, rounds):.4f}, "
        f"through the service's pipeline {service:.4f}; refit the plain way on the service's encoding "
        f"learnt on the oldest " + ", ".join(f"{k}: {v:.4f}" for k, v in encoded.items()),
        flush=True,
    )


def prepared_share(prepared) -> float:
    rows = {k: len(v) for k, v in prepared.y.items()}
    return rows["train"] / sum(rows.values())


def _encoded_score(s: BenchSet, params: dict, rounds: int, share: float) -> float:
    """The plain loop's refit on the service's matrix (its Preprocessor), the encoding learnt on the oldest
    ``share`` of the visible rows: does the service's encoding cost quality?"""
    import lightgbm as lgb
    import polars as pl

    from pmls.ml.preprocess import Preprocessor

    bs = s.bs
    visible = bs.visible.filter(pl.col(bs.target).is_not_null())
    if bs.timestamp:
        visible = visible.sort(bs.timestamp, maintain_order=True)
    features = [c for c in visible.columns if c not in (bs.target, bs.entity)]
    head = visible.head(int(round(len(visible) * share)))
    prep = Preprocessor(bs.target, bs.task, bs.timestamp, features).fit(head)
    data = lgb.Dataset(
        prep.transform(visible), prep.encode_target(visible), categorical_feature=prep.categorical_indices_
    )
    model = lgb.train(params, data, num_boost_round=max(rounds, 1))
    predicted = model.predict(prep.transform(s.hidden))
    if bs.task.value == "binary":
        predicted = np.column_stack([1.0 - predicted, predicted])
    return s.score(predicted)


def _reselect(s: BenchSet, cfg, prepared, study, seed: int, top: int) -> None:
    """The ``top`` best trials scored once more on one extra fold that ends on the test period (fitted on the
    training and validation rows): the best on the mean of all folds is refit. The test period then helps
    choose the delivered configuration, as the plain loop's last fold does."""
    import optuna

    from pmls.ml.fitting import FitOptions, fit_model, predict_scores, score

    done = [t for t in study.trials if t.state is optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: t.value, reverse=study.direction is optuna.study.StudyDirection.MAXIMIZE)
    X, y = prepared.cv_rows()
    X_test, y_test = prepared.inputs("test"), prepared.y["test"]
    folds = len(prepared.plan.folds)
    ranked = []
    for t in done[:top]:
        opts = FitOptions.from_config(cfg, ModelType.LIGHTGBM, t.params, seed=seed, num_threads=2)
        model = fit_model(prepared, opts, X, y, X_test, y_test, ())
        extra = score(prepared, y_test, predict_scores(model, prepared.task, X_test))
        ranked.append(((t.value * folds + extra) / (folds + 1), extra, t))
    ranked.sort(key=lambda r: r[0], reverse=study.direction is optuna.study.StudyDirection.MAXIMIZE)
    extended, extra, chosen = ranked[0]
    hidden = _service_score(s, prepared, cfg, chosen.params, chosen.user_attrs["iterations"])
    print(
        f"{s.bs.name} seed {seed} reselect top {top}: trial {chosen.number} (was rank "
        f"{done.index(chosen) + 1}; lr {chosen.params['learning_rate']:.3f}, {chosen.params['num_leaves']} leaves) "
        f"CV {chosen.value:.4f}, test fold {extra:.4f}, mean {extended:.4f} -> hidden {hidden:.4f}",
        flush=True,
    )


def judge(s: BenchSet, budget: float, seed: int, variants: list[str], reselect: int = 0) -> None:
    import lightgbm as lgb
    import optuna

    from pmls.ml.fitting import FitOptions, cross_validate
    from pmls.ml.metrics import HIGHER_IS_BETTER
    from pmls.ml.search import distributions, make_pruner, merge_space, portfolio
    from pmls.ml.zoo.lightgbm import lightgbm_params

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, prepared = _prepare(s, seed)
    space, _ = merge_space(ModelType.LIGHTGBM, {})
    dists = distributions(space)
    X_all, y_all = prepared.cv_rows()
    folds = [(f.train, f.valid) for f in prepared.plan.folds]
    lgb_metric = {"rmse": "rmse", "roc_auc": "auc", "log_loss": "multi_logloss"}[prepared.metric]
    for variant in variants:
        study = optuna.create_study(
            direction="maximize" if prepared.metric in HIGHER_IS_BETTER else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
            pruner=make_pruner("median" if variant == "service" else "none", len(folds)),
        )
        for config in portfolio(ModelType.LIGHTGBM, space):
            study.enqueue_trial(config)

        def objective(trial: optuna.Trial, variant: str = variant) -> float:
            params = {name: trial._suggest(name, d) for name, d in dists.items()}
            if variant == "lgb-cv":
                full = lightgbm_params(prepared.task, prepared.num_classes, params, seed)
                full |= {"num_threads": 2, "metric": lgb_metric}
                data = lgb.Dataset(X_all, y_all, categorical_feature=list(prepared.categorical))
                result = lgb.cv(
                    full,
                    data,
                    num_boost_round=1000,
                    folds=folds,
                    callbacks=[lgb.early_stopping(50, verbose=False)],
                )
                curve = next(v for k, v in result.items() if k.endswith("-mean"))
                trial.set_user_attr("iterations", [len(curve)] * len(folds))
                return float(curve[-1])
            scores: list[float] = []

            def on_fold(index: int, value: float) -> None:
                scores.append(value)
                trial.report(float(np.mean(scores)), index)
                if trial.should_prune() and index < len(folds) - 1:
                    raise optuna.TrialPruned()

            opts = FitOptions.from_config(cfg, ModelType.LIGHTGBM, params, seed=seed, num_threads=2)
            cv = cross_validate(prepared, opts, on_fold=on_fold)
            trial.set_user_attr("iterations", cv.best_iterations)
            return cv.mean

        started = time.perf_counter()
        study.optimize(objective, timeout=budget)
        best = study.best_trial
        hidden = _service_score(s, prepared, cfg, best.params, best.user_attrs["iterations"])
        if variant == "service" and reselect:
            _reselect(s, cfg, prepared, study, seed, reselect)
        pruned = sum(t.state is optuna.trial.TrialState.PRUNED for t in study.trials)
        print(
            f"{s.bs.name} seed {seed} {variant}: {len(study.trials)} trials ({pruned} pruned) in "
            f"{time.perf_counter() - started:.0f} s, best CV {best.value:.4f} (lr {best.params['learning_rate']:.3f}, "
            f"{best.params['num_leaves']} leaves, rounds {best.user_attrs['iterations']}) -> hidden {hidden:.4f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search_ablation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("experiment", choices=("rows", "pipeline", "judge"))
    parser.add_argument("--sets", default=",".join(TIME_ORDERED), help="comma list of bench.datasets.SETS")
    parser.add_argument("--seeds", default="0", help="comma list")
    parser.add_argument("--budget", type=float, default=40.0, help="seconds per search")
    parser.add_argument(
        "--fractions", default="0.7,1.0", help="rows: the shares of the visible rows to tune on"
    )
    parser.add_argument("--variants", default="service,lgb-cv", help="judge: service and/or lgb-cv")
    parser.add_argument(
        "--reselect",
        type=int,
        default=0,
        help="judge: re-score the service's N best on a fold ending on the test period",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pmls-ablation-"))
    for name in args.sets.split(","):
        s = BenchSet(SETS[name](), workdir)
        for seed in (int(x) for x in args.seeds.split(",")):
            if args.experiment == "rows":
                rows(s, args.budget, seed, [float(x) for x in args.fractions.split(",")])
            elif args.experiment == "pipeline":
                pipeline(s, args.budget, seed)
            else:
                judge(s, args.budget, seed, args.variants.split(","), args.reselect)


if __name__ == "__main__":
    main()

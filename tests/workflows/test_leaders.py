"""The ENSEMBLE search's successive halving across families (pure decisions, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pmls.contracts import ModelType
from pmls.contracts.tuning import TuningProgress
from workflows.training import _Leaders

START = datetime(2026, 1, 1, tzinfo=UTC)
FAMILIES = ["LIGHTGBM", "XGBOOST", "RANDOM_FOREST", "NEURAL_NETWORK"]


def leaders(higher_is_better: bool = True) -> _Leaders:
    return _Leaders(
        {f: f"job/{f.lower()}" for f in FAMILIES},
        1,
        4,
        START,
        START + timedelta(seconds=90),
        higher_is_better,
    )


def progress(**best: float | None) -> dict[str, TuningProgress]:
    return {
        f: TuningProgress(
            family=ModelType(f),
            completed=int(v is not None),
            pruned=0,
            failed=0,
            running=1,
            total=100,
            best_score=v,
        )
        for f, v in best.items()
    }


def test_no_family_is_judged_before_the_first_rung_or_before_every_family_finished_a_trial():
    board = leaders()
    scores = progress(LIGHTGBM=0.9, XGBOOST=0.8, RANDOM_FOREST=0.7, NEURAL_NETWORK=0.6)
    assert board.trailing(START + timedelta(seconds=29), scores) == []  # a third of 90 s is 30 s
    waiting = {**scores, **progress(NEURAL_NETWORK=None)}
    assert (
        board.trailing(START + timedelta(seconds=40), waiting) == []
    )  # the network has no finished trial yet
    assert board.rung == 0


def test_each_rung_stops_the_trailing_half_but_keeps_two_families():
    board = leaders()
    scores = progress(LIGHTGBM=0.7, XGBOOST=0.9, RANDOM_FOREST=0.6, NEURAL_NETWORK=0.8)
    assert board.trailing(START + timedelta(seconds=31), scores) == ["LIGHTGBM", "RANDOM_FOREST"]
    assert board.stopped["RANDOM_FOREST"]["stopped_at_seconds"] == 31.0
    assert "0.6" in board.stopped["RANDOM_FOREST"]["reason"]
    # Two families left: the second rung keeps both.
    assert board.trailing(START + timedelta(seconds=61), scores) == []
    assert board.rung == 2


def test_lower_is_better_metrics_rank_the_other_way():
    board = leaders(higher_is_better=False)
    scores = progress(LIGHTGBM=0.30, XGBOOST=0.20, RANDOM_FOREST=0.50, NEURAL_NETWORK=0.25)
    assert board.trailing(START + timedelta(seconds=31), scores) == ["LIGHTGBM", "RANDOM_FOREST"]


def test_a_rung_with_every_search_already_finished_stops_nothing():
    board = leaders()
    board.children = {f: _Done() for f in FAMILIES}
    scores = progress(LIGHTGBM=0.7, XGBOOST=0.9, RANDOM_FOREST=0.6, NEURAL_NETWORK=0.8)
    assert board.trailing(START + timedelta(seconds=31), scores) == []
    board.children = {"LIGHTGBM": _Done()}  # three still searching: two go on, one stops
    assert board.trailing(START + timedelta(seconds=61), scores) == ["RANDOM_FOREST"]


class _Done:
    def done(self) -> bool:
        return True

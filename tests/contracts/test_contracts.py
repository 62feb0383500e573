"""Contracts: periods, durations, defaults, and messages that name the problem."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from pmls.contracts import TrainingRequest
from pmls.contracts.durations import parse_duration
from pmls.contracts.ids import request_hash
from pmls.contracts.params import fixed_parameters
from pmls.contracts.periods import parse_period


def test_date_only_period_includes_its_last_day():
    period = parse_period("2024-01-01/2024-06-30")
    assert period.start == datetime(2024, 1, 1) and period.end == datetime(2024, 7, 1)


def test_datetime_period_is_closed_open_in_utc():
    period = parse_period("2024-01-01T00:00:00+02:00/2024-01-02T00:00:00Z")
    assert period.start == datetime(2023, 12, 31, 22) and period.end == datetime(2024, 1, 2)


@pytest.mark.parametrize("text", ["2024-01-01", "2024-01-01/", "a/b", "2024-06-30/2024-01-01"])
def test_bad_periods_are_rejected(text):
    with pytest.raises(ValueError, match=text.split("/")[0] or "empty"):
        parse_period(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT2H", 7200), ("90m", 5400), ("2h", 7200), ("P1DT30M", 88200), ("45s", 45)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_minimal_request_gets_sensible_defaults():
    req = TrainingRequest.model_validate(
        {"model_type": "LIGHTGBM", "dataset_config": {"source": "d.csv", "target": "y"}}
    )
    assert req.training_mode.value == "FULL_RETRAIN"
    assert req.validation_config.cv_folds == 5 and req.deployment_config.alias == "production"
    assert req.lineage == "y"


def test_periods_without_timestamp_column_name_the_problem():
    with pytest.raises(ValidationError, match="timestamp_column"):
        TrainingRequest.model_validate(
            {
                "model_type": "LIGHTGBM",
                "dataset_config": {
                    "source": "d.csv",
                    "target": "y",
                    "training_period": "2024-01-01/2024-02-01",
                    "validation_period": "2024-02-01/2024-03-01",
                    "test_period": "2024-03-01/2024-04-01",
                },
            }
        )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"validation_config": {"bag_folds": 1}}, "bag_folds"),
        ({"validation_config": {"bag_folds": 11}}, "bag_folds"),
        ({"random_seed": -1}, "random_seed"),
    ],
)
def test_bagging_and_seed_are_checked(extra, field):
    with pytest.raises(ValidationError, match=field):
        TrainingRequest.model_validate(
            {"model_type": "ENSEMBLE", "dataset_config": {"source": "d.csv", "target": "y"}, **extra}
        )
    ok = TrainingRequest.model_validate(
        {
            "model_type": "ENSEMBLE",
            "random_seed": 7,
            "validation_config": {"bag_folds": 5},
            "dataset_config": {"source": "d.csv", "target": "y"},
        }
    )
    assert (ok.random_seed, ok.validation_config.bag_folds) == (7, 5)


def test_unknown_field_is_rejected_not_dropped():
    with pytest.raises(ValidationError, match="trainig_mode"):
        TrainingRequest.model_validate(
            {
                "model_type": "LIGHTGBM",
                "trainig_mode": "FULL_RETRAIN",
                "dataset_config": {"source": "d.csv", "target": "y"},
            }
        )


def test_request_hash_ignores_the_id_but_not_the_body():
    base = {"model_type": "LIGHTGBM", "dataset_config": {"source": "d.csv", "target": "y"}}
    a = TrainingRequest.model_validate({**base, "training_id": "a"})
    b = TrainingRequest.model_validate({**base, "training_id": "b"})
    c = TrainingRequest.model_validate({**base, "model_name": "other"})
    assert request_hash(a) == request_hash(b) != request_hash(c)


def test_single_point_ranges_are_fixed_parameters():
    req = TrainingRequest.model_validate(
        {
            "model_type": "LIGHTGBM",
            "dataset_config": {"source": "d", "target": "y"},
            "hyperparameter_config": {
                "search_space": {
                    "num_leaves": {"type": "int", "low": 15, "high": 15},
                    "learning_rate": {"type": "float", "low": 0.01, "high": 0.1},
                    "boosting": {"type": "categorical", "choices": ["dart"]},
                }
            },
        }
    )
    assert fixed_parameters(req.hyperparameter_config.search_space) == {"num_leaves": 15, "boosting": "dart"}


def test_known_parameters_mirror_the_model_zoo():
    from pmls.contracts.params import KNOWN_PARAMETERS
    from pmls.ml.zoo import REGISTRY

    assert {t: set(names) for t, names in KNOWN_PARAMETERS.items()} == {
        t: set(entry.known_params) for t, entry in REGISTRY.items()
    }


def test_lstm_without_a_timestamp_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match="timestamp_column"):
        TrainingRequest.model_validate(
            {"model_type": "LSTM", "dataset_config": {"source": "d", "target": "y"}}
        )

"""A synthetic, time-ordered customer-churn dataset with a real, learnable signal (for demos and tests)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

START = datetime(2024, 1, 1)
PLANS = {"basic": 0.6, "standard": 0.0, "premium": -0.5, "enterprise": -1.0}  # logit effect
PLAN_SHARE = (0.4, 0.3, 0.2, 0.1)
PLAN_PRICE = {"basic": 20.0, "standard": 45.0, "premium": 80.0, "enterprise": 150.0}
REGIONS = {"north": -0.2, "south": 0.3, "east": 0.0, "west": 0.1, "central": -0.1}
INTERCEPT = -1.4  # puts the churn rate near 25%
# Periods over the default 540 days (2024-01-01 .. 2025-06-23); none is empty.
DEMO_PERIODS = {
    "training_period": "2024-01-01/2024-12-31",
    "validation_period": "2025-01-01/2025-03-31",
    "test_period": "2025-04-01/2025-06-23",
}


def _timestamps(rng: np.random.Generator, days: int, rows_per_day: int) -> np.ndarray:
    day = np.repeat(np.arange(days), rows_per_day)
    seconds = rng.integers(0, 86_400, size=day.size)
    moments = np.datetime64(START) + day.astype("timedelta64[D]") + seconds.astype("timedelta64[s]")
    return np.sort(moments.astype("datetime64[us]"))


def _customers(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    plan = rng.choice(list(PLANS), size=n, p=PLAN_SHARE)
    price = np.array([PLAN_PRICE[p] for p in plan])
    spend = price * rng.lognormal(0.0, 0.25, size=n)
    spend[rng.random(n) < 0.02] = np.nan  # some missing values, as real billing exports have
    return {
        "customer_id": np.char.add("C", rng.integers(10_000, 99_999, size=n).astype(str)),
        "plan": plan,
        "region": rng.choice(list(REGIONS), size=n),
        "tenure_months": rng.geometric(1 / 18, size=n).clip(1, 120),
        "monthly_spend": spend.round(2),
        "support_tickets": rng.poisson(1.2, size=n),
        "usage_trend": rng.normal(0.0, 1.0, size=n).round(3),
        "discount": rng.random(n) < 0.3,
    }


def _churn_logit(cols: dict[str, np.ndarray], moments: np.ndarray) -> np.ndarray:
    day_of_year = (moments - moments.astype("datetime64[Y]")).astype("timedelta64[D]").astype(int)
    spend = np.nan_to_num(cols["monthly_spend"], nan=50.0)
    return (
        INTERCEPT
        - 0.035 * np.minimum(cols["tenure_months"], 60)
        + 0.45 * cols["support_tickets"]
        - 1.1 * cols["usage_trend"]
        + np.array([PLANS[p] for p in cols["plan"]])
        + np.array([REGIONS[r] for r in cols["region"]])
        - 0.7 * cols["discount"]
        + 0.004 * (spend - 50.0)
        + 0.4 * np.sin(2 * np.pi * day_of_year / 365.0)  # churn peaks with the spring renewals
    )


def generate_demo_dataset(
    path: str | Path, *, days: int = 540, rows_per_day: int = 40, seed: int = 7
) -> Path:
    """Write the churn dataset as Parquet at ``path``; target ``churned`` (0/1), time ``event_time``."""
    rng = np.random.default_rng(seed)
    moments = _timestamps(rng, days, rows_per_day)
    cols = _customers(rng, moments.size)
    probability = 1.0 / (1.0 + np.exp(-_churn_logit(cols, moments)))
    churned = (rng.random(moments.size) < probability).astype(np.int8)
    frame = pl.DataFrame({"event_time": moments, **cols, "churned": churned})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(out)
    return out


def demo_end(days: int = 540) -> datetime:
    """The last day the default generator covers (handy for choosing periods)."""
    return START + timedelta(days=days - 1)

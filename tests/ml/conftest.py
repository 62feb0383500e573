"""Small frames shared by the ML tests (test files are named test_ml_* so they never clash with
same-named test modules elsewhere under tests/, which have no __init__.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread for torch, as the worker sets at start-up (workers/main.py).

    torch otherwise takes every core, and on a busy two-core machine its spinning threads make the
    small nets of these tests ten times slower.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; stay usable without it
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _make_frame(n: int = 400, seed: int = 0, start: datetime = datetime(2024, 1, 1)) -> pl.DataFrame:
    """n rows, one per 6 hours from ``start``, with a learnable binary target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    label = (x + (colour == "red") + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    return pl.DataFrame(
        {
            "ts": [start + timedelta(hours=6 * i) for i in range(n)],
            "x": x,
            "count": rng.integers(0, 10, size=n),
            "colour": colour,
            "flag": rng.random(n) < 0.5,
            "id": [f"e{i % 50}" for i in range(n)],
            "y": label,
        }
    )


@pytest.fixture
def make_frame():
    """The frame builder, for tests that need another size or seed."""
    return _make_frame


@pytest.fixture
def frame() -> pl.DataFrame:
    return _make_frame()

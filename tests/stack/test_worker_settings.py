"""How `pmls up` spreads the trial slots over trials-worker processes (PMLS_TRIAL_SLOTS, PMLS_TRIAL_PROCESSES)."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from pmls.settings import Settings, WorkerSettings
from pmls.stack import Stack


def _workers(monkeypatch, **env) -> list[list[str]]:
    for name in ("PMLS_TRIAL_SLOTS", "PMLS_TRIAL_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    stack = Stack(settings)
    return [stack._trials_worker(i).argv for i in range(settings.worker.processes)]


def _option(argv: list[str], name: str) -> int:
    return int(argv[argv.index(name) + 1])


def test_one_process_per_slot_by_default(monkeypatch):
    workers = _workers(monkeypatch, PMLS_TRIAL_SLOTS=3)
    assert [_option(w, "--slots") for w in workers] == [1, 1, 1]


def test_fewer_processes_share_the_slots(monkeypatch):
    workers = _workers(monkeypatch, PMLS_TRIAL_SLOTS=5, PMLS_TRIAL_PROCESSES=2)
    assert [_option(w, "--slots") for w in workers] == [3, 2]
    # Threads per trial follow the machine's slots, not the process's: the 3-slot process's trials get no more.
    assert [_option(w, "--threads") for w in workers] == [max(1, (os.cpu_count() or 1) // 5)] * 2


def test_more_processes_than_slots_is_capped(monkeypatch):
    assert len(_workers(monkeypatch, PMLS_TRIAL_SLOTS=2, PMLS_TRIAL_PROCESSES=8)) == 2


def test_zero_slots_is_refused_with_the_setting_named(monkeypatch):
    monkeypatch.setenv("PMLS_TRIAL_SLOTS", "0")
    with pytest.raises(ValidationError, match="trial_slots"):
        WorkerSettings()

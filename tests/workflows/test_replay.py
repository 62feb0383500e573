"""Determinism: recorded histories must replay on the current workflow code.

A change that breaks replay would break every job in flight during a deploy; guard such changes with
``workflow.patched(...)``. New histories come from ``python -m tests.workflows.record DATA.parquet`` against a stack.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.lineage import LineageWorkflow
from workflows.training import TrainingWorkflow
from workflows.tuning import TuningWorkflow

# The current code's own histories (top level) and, in a sub-folder named after each patch id
# (workflows/patches.py), those recorded before that patch: jobs in flight during its deploy must still replay.
ROOT = Path(__file__).parent / "histories"
HISTORIES = sorted(ROOT.rglob("*.json"))


def replay(history: WorkflowHistory) -> None:
    replayer = Replayer(
        workflows=[TrainingWorkflow, TuningWorkflow, LineageWorkflow], data_converter=pydantic_data_converter
    )
    asyncio.run(replayer.replay_workflow(history))


@pytest.mark.parametrize("path", HISTORIES, ids=[str(p.relative_to(ROOT).with_suffix("")) for p in HISTORIES])
def test_committed_history_replays(path: Path):
    replay(WorkflowHistory.from_json(path.stem, path.read_text()))


def test_there_are_committed_histories():
    current = [p for p in HISTORIES if p.parent == ROOT]
    assert {p.stem.split("-")[0] for p in current} >= {"completed", "failed", "cancelled"}
    assert any(p.stem.endswith("-child") for p in current)  # a TuningWorkflow history too

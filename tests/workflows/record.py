"""Save a job's Temporal history for the replay tests: ``python -m tests.workflows.record JOB_ID NAME``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pmls.settings import Settings
from workers.main import connect_temporal


async def main(job_id: str, name: str) -> None:
    client = await connect_temporal(Settings())
    history = await client.get_workflow_handle(job_id).fetch_history()
    out = Path(__file__).parent / "histories" / f"{name}.json"
    out.write_text(history.to_json())
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

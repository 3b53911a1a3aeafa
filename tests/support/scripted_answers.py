"""What the scripted adapter (tests/fixtures/scripted_adapter.py) answers, and waits on
the stored task, shared by the streaming tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.scripted_adapter import read_records
from tests.support.sse import TERMINAL, get_task_json


def expected(chunks: int) -> str:
    """The scripted adapter's whole answer for `chunks` chunks."""
    return "".join(f"c{i} " for i in range(chunks))


async def wait_done(http: httpx.AsyncClient, base: str, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        task = await get_task_json(http, base, task_id)
        if task["status"]["state"] in TERMINAL:
            return task
        await asyncio.sleep(0.2)
    raise AssertionError(f"task {task_id} not finished after {timeout}s: {task['status']}")


def parts_text(task: dict[str, Any]) -> list[str]:
    return [p.get("text", "") for a in task.get("artifacts", []) for p in a["parts"]]


def starts(records: Path, task_id: str) -> int:
    """How many adapter runs the task had."""
    return sum(1 for r in read_records(records, task_id) if r["event"] == "start")

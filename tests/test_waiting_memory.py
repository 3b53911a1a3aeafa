"""Tasks waiting for input keep no memory in the server (direct mode, SQLite).

A real server process with the gate adapter (`ask` asks a question at once).
1000 tasks are left in input-required; the server's RSS after they all wait
(and the SDK has released their live producers) is compared with the RSS
after a warm-up of the same requests, against a bound only a leak crosses.
Figures go to the JSON file of tests/support/figures.py; the target (10 MiB
per 2000) is measured by `python -m bench.waiting_memory` (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.figures import record
from tests.support.procs import ServerProcess
from tests.support.sse import A2A, message_json

pytestmark = pytest.mark.slow

GATE = Path(__file__).parent / "fixtures" / "gate_adapter.py"
WAITING = int(os.environ.get("MOLECULE_WAITING_TASKS", "1000"))
WARM_UP = 200
# A bound for a leak, not a target (40 MiB per 2000 tasks): before the release of
# waiting tasks the same scenario grew ~92 MiB per 2000 (46 KiB a task); today ~7 MiB. Noise on a loaded machine
# crosses any figure near the target, so the target is measured by bench.waiting_memory.
LEAK_MIB = 40.0
# The SDK releases a waiting task's producer after 1 s, live offsets go after 5 s.
SETTLE = 7.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def park(http: httpx.AsyncClient, count: int) -> None:
    """`count` tasks left waiting for input, 20 requests at a time."""
    line = asyncio.Semaphore(20)

    async def one() -> None:
        body = {
            "jsonrpc": "2.0",
            "id": str(uuid.uuid4()),
            "method": "SendMessage",
            "params": {"message": message_json("ask")},
        }
        async with line:
            result = (await http.post("/", json=body, headers=A2A)).json()
        assert result["result"]["task"]["status"]["state"] == "TASK_STATE_INPUT_REQUIRED", result

    await asyncio.gather(*(one() for _ in range(count)))


async def test_waiting_tasks_keep_no_memory(server_factory, tmp_path_factory) -> None:
    server: ServerProcess = server_factory({"ADAPTER_MODULE": str(GATE), "LOG_LEVEL": "WARNING"})
    assert server.proc is not None
    pid = server.proc.pid
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        # Warm-up: imports, caches, the store's pool and the allocator's arenas.
        await park(http, WARM_UP)
        await asyncio.sleep(SETTLE)
        before = rss_kib(pid)
        started = time.monotonic()
        await park(http, WAITING)
        seconds = time.monotonic() - started
        peak = rss_kib(pid)
        await asyncio.sleep(SETTLE)
        after = rss_kib(pid)
    grown_mib = (after - before) / 1024
    record(
        tmp_path_factory.getbasetemp() / "reliability-figures.json",
        "waiting_tasks_memory",
        {
            "waiting_tasks": WAITING,
            "rss_before_mib": round(before / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "rss_growth_mib": round(grown_mib, 1),
            "kib_per_waiting_task": round((after - before) / WAITING, 2),
            "seconds_to_park": round(seconds, 1),
        },
    )
    assert grown_mib <= LEAK_MIB * WAITING / 2000, f"{grown_mib:.1f} MiB for {WAITING} waiting tasks: a leak"

"""TEMPORAL_HOST=embedded: durable mode with zero infrastructure, surviving a crash."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import TaskState

from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import make_client, stream_events, task_text
from tests.support.durable import durable_env, readyz, scripted_message, wait_terminal

pytestmark = pytest.mark.temporal


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


async def test_embedded_survives_sigkill_and_child_dies_with_runtime(
    server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = durable_env("embedded", records)
    workdir = tmp_path / "embedded"
    server = server_factory(env, workdir=workdir)
    body = (await readyz(server.url)).json()
    assert body["mode"] == "durable" and body["temporal"]["embedded"] is True
    assert server.proc is not None
    temporal_children = children_of(server.proc.pid)
    assert temporal_children, "the embedded Temporal server should be a child process"

    client = await make_client(server.url)
    seen: list = []

    async def consume() -> None:
        try:
            async for event in stream_events(client, scripted_message(chunks=12, delay=0.1)):
                seen.append(event)
        except Exception:
            pass  # the runtime dies under us

    consumer = asyncio.create_task(consume())
    deadline = time.monotonic() + 20
    while sum(e.WhichOneof("payload") == "artifact_update" for e in seen) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task_id = seen[0].task.id
    server.kill()
    await asyncio.wait_for(consumer, 10)

    # The kernel takes the embedded server down with its parent.
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in temporal_children):
        assert time.monotonic() < deadline, "embedded Temporal outlived the runtime"
        await asyncio.sleep(0.05)

    # Same data dir: the restarted runtime's embedded server resumes the workflow.
    restarted = server_factory(env, workdir=workdir, port=server.port)
    client2 = await make_client(restarted.url)
    task = await wait_terminal(client2, task_id, timeout=60)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == "".join(f"c{i} " for i in range(12))
    assert len([r for r in read_records(records, task_id) if r["event"] == "done"]) == 1
    await client.close()
    await client2.close()

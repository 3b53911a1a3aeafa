"""TEMPORAL_HOST=embedded: durable mode with zero infrastructure, surviving a crash."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import TaskState

from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import BackgroundStream, make_client, task_text, wait_terminal
from tests.support.durable import durable_env, readyz, scripted_message
from tests.support.procs import processes, stat_fields

pytestmark = pytest.mark.temporal


def children_of(pid: int) -> list[int]:
    return [child for child, fields in processes() if int(fields[1]) == pid]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


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
    # The runtime dies under the stream.
    stream = BackgroundStream(client, scripted_message(chunks=12, delay=0.1), may_break=True)
    await stream.wait_chunks(2, timeout=20)
    task_id = stream.task_id
    server.kill()
    await stream.finish(10)

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

"""Deploys: SIGTERM hands running durable work back to Temporal instead of cancelling it
(real Temporal dev server, real server processes, one shared SQLite task store)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.fixtures.scripted_adapter import read_records
from tests.support.durable import durable_env
from tests.support.scripted_answers import expected
from tests.support.sse import get_task_json, read_frames, stream_request, task_id_of


async def completed(http: httpx.AsyncClient, base: str, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            task = await get_task_json(http, base, task_id)
        except httpx.HTTPError:
            task = {}
        state = task.get("status", {}).get("state")
        if state == "TASK_STATE_COMPLETED":
            return task
        assert state not in ("TASK_STATE_CANCELED", "TASK_STATE_FAILED"), task
        await asyncio.sleep(0.2)
    raise AssertionError(f"task {task_id} not completed after {timeout}s: {task.get('status')}")


def answer(task: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for a in task.get("artifacts", []) for p in a["parts"])


async def no_cancel_requested(address: str, env: dict[str, str], task_id: str) -> None:
    client = await Client.connect(address)
    handle = client.get_workflow_handle(f"molecule:{env['WORKSPACE_ID']}:{task_id}")
    # The task is stored completed by the workflow's last step, just before the
    # workflow itself completes: on a loaded machine its history can lag.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(handle.result(), 30)
    history = await handle.fetch_history()
    kinds = {event.event_type for event in history.events}
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED not in kinds
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED in kinds


async def start_stream(base: str, chunks: int, delay: float) -> str:
    """Start a task and return its id once its first chunks streamed (the client then leaves)."""
    async with httpx.AsyncClient(timeout=30) as http:
        frames = await read_frames(
            http, stream_request("JSONRPC", base, "go", {"chunks": chunks, "delay": delay}),
            stop_after_chunks=3,
        )
    return task_id_of(frames)


@pytest.mark.temporal
async def test_sigterm_mid_stream_hands_the_task_back_and_a_restart_finishes_it(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = durable_env(temporal_server.address, records, MOLECULE_SHUTDOWN_GRACE="2")
    workdir = tmp_path / "replica"
    server = server_factory(env, workdir=workdir)
    chunks = 30
    task_id = await start_stream(server.url, chunks, 0.5)  # a 15 s answer
    server.stop()  # SIGTERM; the task cannot finish within the 2 s grace
    assert server.proc is not None and server.proc.returncode == 0, server.log()
    restarted = server_factory(env, workdir=workdir, port=server.port)
    async with httpx.AsyncClient(timeout=10) as http:
        task = await completed(http, restarted.url, task_id, 60)
    assert answer(task) == expected(chunks)
    await no_cancel_requested(temporal_server.address, env, task_id)
    runs = [r for r in read_records(records, task_id) if r["event"] in ("start", "done")]
    assert [r["event"] for r in runs].count("done") == 1, runs


@pytest.mark.temporal
async def test_sigterm_with_a_second_replica_up_finishes_the_task_there(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    shared_store = f"sqlite+aiosqlite:///{tmp_path / 'shared' / 'tasks.db'}"
    env = durable_env(
        temporal_server.address,
        records,
        MOLECULE_SHUTDOWN_GRACE="1",
        TASK_STORE_URL=shared_store,
        TEMPORAL_SCHEDULE_TO_START_TIMEOUT="2",
    )
    leaving = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-a"})
    staying = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-b"})
    chunks = 24
    task_id = await start_stream(leaving.url, chunks, 0.5)  # 12 s
    stopped_at = time.monotonic()
    leaving.stop()
    async with httpx.AsyncClient(timeout=10) as http:
        task = await completed(http, staying.url, task_id, 60)
    finished_after = time.monotonic() - stopped_at
    assert answer(task) == expected(chunks)
    await no_cancel_requested(temporal_server.address, env, task_id)
    pids = {r["pid"] for r in read_records(records, task_id) if r["event"] == "done"}
    assert staying.proc is not None and pids == {staying.proc.pid}
    # Heartbeat timeout (2 s) + schedule-to-start (2 s) + the 12 s answer, with slack.
    assert finished_after < 12 + 2 + 2 + 10, finished_after


async def test_sigterm_in_direct_mode_fails_an_unfinished_task_saying_why(
    server_factory, tmp_path: Path
) -> None:
    env = {
        "ADAPTER_MODULE": str(Path(__file__).parent / "fixtures" / "scripted_adapter.py"),
        "ADAPTER_OPTIONS": '{"record_dir": "%s"}' % (tmp_path / "records"),
        "MOLECULE_SHUTDOWN_GRACE": "1",
    }
    workdir = tmp_path / "direct"
    server = server_factory(env, workdir=workdir)
    task_id = await start_stream(server.url, 30, 0.5)
    server.stop()
    restarted = server_factory(env, workdir=workdir, port=server.port)
    async with httpx.AsyncClient(timeout=10) as http:
        task = await get_task_json(http, restarted.url, task_id)
    assert task["status"]["state"] == "TASK_STATE_FAILED"
    message = "".join(p.get("text", "") for p in task["status"]["message"]["parts"])
    assert message.startswith("The server shut down before this task finished"), message


async def _blocked_run(server_url: str, block: float) -> tuple[dict, str]:
    chunks = 12
    async with httpx.AsyncClient(timeout=90) as http:
        frames = await read_frames(
            http,
            stream_request("JSONRPC", server_url, "go", {"chunks": chunks, "delay": 0.2, "block_first": block}),
            timeout=90,
        )
        task_id = task_id_of(frames)
        task = await completed(http, server_url, task_id, 60)
        metrics = (await http.get(f"{server_url}/metrics")).text
    assert answer(task) == expected(chunks)
    stalls = [line for line in metrics.splitlines() if line.startswith("molecule_event_loop_stalls_total{")]
    assert stalls and float(stalls[0].rsplit(" ", 1)[1]) >= 1, stalls
    return task, task_id


@pytest.mark.temporal
async def test_a_busy_event_loop_keeps_its_attempt(temporal_server, server_factory, tmp_path: Path) -> None:
    """The first attempt freezes the loop for 3.5 s, past the heartbeat timeout (2 s):
    the loop's own heartbeats are late, the pulse thread's are not, so Temporal sees
    the attempt alive and it finishes the task alone (a busy process is not a dead
    one). The freeze is reported."""
    records = tmp_path / "records"
    server = server_factory(durable_env(temporal_server.address, records))
    _, task_id = await _blocked_run(server.url, 3.5)
    runs = read_records(records, task_id)
    assert [r["event"] for r in runs] == ["start", "done"], runs
    assert {r["attempt"] for r in runs} == {1}, runs
    assert "the event loop was blocked for" in server.log()


@pytest.mark.temporal
async def test_a_hung_event_loop_loses_its_attempt_and_never_runs_twice_at_once(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    """A loop frozen for 10 s, past the pulse's stall limit (4 heartbeat timeouts:
    8 s), is a hung process: heartbeats stop, Temporal starts attempt 2 in the same
    process, attempt 1 is stopped first, and the answer is one attempt's text, not
    two interleaved."""
    records = tmp_path / "records"
    server = server_factory(durable_env(temporal_server.address, records))
    _, task_id = await _blocked_run(server.url, 10)
    events = [r["event"] for r in read_records(records, task_id)]
    assert events.count("done") == 1, events
    assert "cancelled" in events, events  # attempt 1 was stopped, not left running


@pytest.mark.temporal
async def test_a_resumed_durable_turn_reports_working(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    env = durable_env(temporal_server.address, tmp_path / "records")
    env["ADAPTER_MODULE"] = str(Path(__file__).parent / "fixtures" / "asking_adapter.py")
    env["ADAPTER_OPTIONS"] = '{"record": "%s"}' % (tmp_path / "record.jsonl")
    server = server_factory(env)
    async with httpx.AsyncClient(timeout=30) as http:
        first = await read_frames(http, stream_request("JSONRPC", server.url, "hello there"))
        task_id = task_id_of(first)
        context_id = first[0][1]["task"]["contextId"]
        method, url, body = stream_request("JSONRPC", server.url, "Ada")
        body["params"]["message"].update({"taskId": task_id, "contextId": context_id})
        second = await read_frames(http, (method, url, body))
    # The stream begins with the Task (A2A 1.0 §3.1.2), which reports the turn working.
    assert second[0][1]["task"]["status"]["state"] == "TASK_STATE_WORKING", second[0]
    states = [f[1]["statusUpdate"]["status"]["state"] for f in second if "statusUpdate" in f[1]]
    assert states[-1] == "TASK_STATE_COMPLETED", states

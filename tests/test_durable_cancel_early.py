"""A durable task canceled at once, right after its stream's first event (while its
workflow may still be starting): CancelTask answers CANCELED, the stream ends with
CANCELED, and the adapter never goes on after the cancel was answered."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.scripted_adapter import read_records
from tests.support.durable import durable_env
from tests.support.scripted_answers import wait_done
from tests.support.sse import A2A, sse_frames, state_of, stream_request

pytestmark = pytest.mark.temporal

# Before the cancel waited for a workflow being started, about 1 in 6 such streams
# ended with only their first event and the workflow went on.
TASKS = 15


async def _cancel(http: httpx.AsyncClient, base: str, task_id: str) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": "CancelTask", "params": {"id": task_id}}
    return (await http.post(f"{base}/", json=body, headers=A2A)).json()


async def _stream_and_cancel(http: httpx.AsyncClient, base: str) -> tuple[str, dict[str, Any], list[dict]]:
    method, url, body = stream_request("JSONRPC", base, "go", {"chunks": 100, "delay": 0.05})
    frames: list[dict[str, Any]] = []
    answer: dict[str, Any] = {}
    task_id = ""
    async with asyncio.timeout(60):
        async with http.stream(method, url, json=body, headers=A2A) as response:
            async for _, payload in sse_frames(response):
                frames.append(payload)
                if not task_id:
                    first = payload.get("task") or payload.get("statusUpdate") or {}
                    task_id = first.get("id") or first["taskId"]
                    answer = await _cancel(http, base, task_id)
    return task_id, answer, frames


async def test_a_cancel_right_after_the_first_event_ends_the_stream_canceled(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    server = server_factory(
        durable_env(temporal_server.address, records, STREAM_BATCH_WINDOW="0", TEMPORAL_HEARTBEAT_TIMEOUT="2")
    )
    async with httpx.AsyncClient(timeout=30) as http:
        results = [await _stream_and_cancel(http, server.url) for _ in range(TASKS)]
        for task_id, answer, frames in results:
            assert answer.get("result", {}).get("status", {}).get("state") == "TASK_STATE_CANCELED", answer
            states = [state_of(f) for f in frames if state_of(f)]
            assert states and states[-1] == "TASK_STATE_CANCELED", (task_id, states)
            task = await wait_done(http, server.url, task_id, 30)
            assert task["status"]["state"] == "TASK_STATE_CANCELED"
        # Whatever ran of each adapter stopped: none finished after the cancel.
        await asyncio.sleep(1.0)
        for task_id, _, _ in results:
            events = [r["event"] for r in read_records(records, task_id)]
            assert "done" not in events, (task_id, events)
            task = await wait_done(http, server.url, task_id, 5)
            assert task["status"]["state"] == "TASK_STATE_CANCELED", task["status"]

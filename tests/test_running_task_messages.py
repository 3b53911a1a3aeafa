"""With MOLECULE_CONCURRENT_MESSAGES=reject a message to a task that is still running is
refused at once, in both modes, and the running task goes on untouched (real HTTP, real
Temporal for durable mode). The other policies: test_double_texting.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.durable import durable_env
from tests.support.sse import A2A, read_frames, state_of, stream_request, task_id_of, text_of

SCRIPTED = Path(__file__).parent / "fixtures" / "scripted_adapter.py"


def follow_up(task_id: str, context_id: str) -> dict:
    return {
        "role": "ROLE_USER",
        "messageId": str(uuid.uuid4()),
        "parts": [{"text": "and another thing"}],
        "taskId": task_id,
        "contextId": context_id,
    }


@pytest.mark.parametrize("mode", ["direct", pytest.param("durable", marks=pytest.mark.temporal)])
async def test_a_message_to_a_running_task_is_refused_and_the_task_goes_on(
    mode: str, request: pytest.FixtureRequest, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    if mode == "durable":
        env = durable_env(request.getfixturevalue("temporal_server").address, records)
    else:
        env = {"ADAPTER_MODULE": str(SCRIPTED), "ADAPTER_OPTIONS": json.dumps({"record_dir": str(records)})}
    server = server_factory({**env, "MOLECULE_CONCURRENT_MESSAGES": "reject"})
    chunks = 15
    async with httpx.AsyncClient(timeout=30) as http:
        streaming = asyncio.create_task(
            read_frames(http, stream_request("JSONRPC", server.url, "go", {"chunks": chunks, "delay": 0.2}))
        )
        task_id = ""
        for _ in range(100):
            page = (await http.get(f"{server.url}/rest/tasks", headers=A2A)).json()
            running = [t for t in page.get("tasks", []) if t["status"]["state"] == "TASK_STATE_WORKING"]
            if running:
                task_id, context_id = running[0]["id"], running[0]["contextId"]
                break
            await asyncio.sleep(0.05)
        assert task_id
        rpc = {"jsonrpc": "2.0", "id": 7, "method": "SendMessage", "params": {"message": follow_up(task_id, context_id)}}
        refused = (await http.post(f"{server.url}/", json=rpc, headers=A2A)).json()
        assert "error" in refused, refused
        assert f"Task {task_id} of this conversation is still running" in refused["error"]["message"]
        rest = await http.post(
            f"{server.url}/rest/message:send", json={"message": follow_up(task_id, context_id)}, headers=A2A
        )
        assert 400 <= rest.status_code < 500, rest.text
        frames = await streaming
    assert task_id_of(frames) == task_id
    assert state_of(frames[-1][1]) == "TASK_STATE_COMPLETED"
    assert text_of(frames) == "".join(f"c{i} " for i in range(chunks))
    async with httpx.AsyncClient(timeout=10) as http:
        task = (await http.get(f"{server.url}/rest/tasks/{task_id}", headers=A2A)).json()
    texts = [p.get("text") for m in task.get("history", []) for p in m["parts"]]
    assert "and another thing" not in texts

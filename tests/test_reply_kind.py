"""An adapter decides per message whether to answer with a Message or a task
(`BaseAdapter.replies_with_message_to`), over real HTTP, on JSON-RPC and HTTP+JSON,
blocking and streaming; a repeat gets the same kind of answer. Adapters that only set
`replies_with_message` (or yield `str` and set nothing) are covered in test_parts.py and
the round-trip tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import ServerProcess, running_server
from tests.support.sse import A2A, aiter_sse

TCK_ADAPTER = Path(__file__).parent / "fixtures" / "tck_adapter.py"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("reply-kind")
    with running_server(workdir, {"ADAPTER_MODULE": str(TCK_ADAPTER)}) as server:
        yield server


def message(prefix: str) -> dict:
    return {"role": "ROLE_USER", "messageId": f"{prefix}-{uuid.uuid4()}", "parts": [{"text": "hi"}]}


async def send(http: httpx.AsyncClient, base: str, binding: str, sent: dict) -> dict:
    if binding == "JSONRPC":
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": sent}}
        answer = (await http.post(f"{base}/", json=body, headers=A2A)).json()
        assert "result" in answer, answer
        return answer["result"]
    answer = await http.post(f"{base}/rest/message:send", json={"message": sent}, headers=A2A)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def stream(http: httpx.AsyncClient, base: str, binding: str, sent: dict) -> list[dict]:
    if binding == "JSONRPC":
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": {"message": sent}}
        request = ("POST", f"{base}/", body)
    else:
        request = ("POST", f"{base}/rest/message:stream", {"message": sent})
    method, url, body = request
    async with http.stream(method, url, json=body, headers=A2A) as response:
        return [p.get("result", p) async for _, p in aiter_sse(response)]


def text(parts: list[dict]) -> str:
    return "".join(p.get("text", "") for p in parts)


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_the_adapter_picks_message_or_task_per_message(
    served: ServerProcess, binding: str
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        asked = message("tck-message-response")
        reply = await send(http, served.url, binding, asked)
        assert set(reply) == {"message"}, reply
        assert text(reply["message"]["parts"]) == "Direct message response"
        assert reply["message"]["role"] == "ROLE_AGENT"
        # A repeat (same messageId) gets the same Message, and no task.
        assert await send(http, served.url, binding, asked) == reply

        task = await send(http, served.url, binding, message("tck-complete-task"))
        assert set(task) == {"task"}, task
        assert task["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        assert text(task["task"]["status"]["message"]["parts"]) == "Hello from TCK"

        streamed = await stream(http, served.url, binding, message("tck-message-response"))
        assert [set(e) for e in streamed] == [{"message"}], streamed
        streamed = await stream(http, served.url, binding, message("tck-stream-001"))
        assert set(streamed[0]) == {"task"} and "statusUpdate" in streamed[-1], streamed

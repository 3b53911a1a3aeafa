"""Protocol behaviour over raw HTTP and the a2a-sdk client: errors, rejection, failure,
0.3 compatibility, history, health and the agent card."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError

from tests.support.a2a import make_client, task_text, user_message
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json, post_sse
from tests.support.template_repo import template_repo

A2A_HEADERS = {"A2A-Version": "1.0"}
PUBLIC_URL = "https://agents.example.test/probe"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with the test adapter, shared by this module's tests (they do not interfere)."""
    root = tmp_path_factory.mktemp("probe")
    env = {
        "ADAPTER_MODULE": "adapter",
        "ADAPTER_OPTIONS": '{"flavour": "tests"}',
        "WORKSPACE_ID": "ws-protocol",
    }
    with running_server(root, env, cwd=template_repo(root / "template")) as server:
        yield server


def rpc(server: ServerProcess, method: str, params: dict, *, headers: dict | None = None) -> dict:
    body = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}
    response = httpx.post(
        server.url + "/", json=body, headers=A2A_HEADERS if headers is None else headers, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def send_params(text: str) -> dict:
    return {"message": message_json(text)}


async def send(server: ServerProcess, message: Message) -> Task:
    client = await make_client(server.url, streaming=False)
    try:
        responses = [r async for r in client.send_message(SendMessageRequest(message=message))]
    finally:
        await client.close()
    assert len(responses) == 1 and responses[0].HasField("task"), responses
    return responses[0].task


def status_text(task: Task) -> str:
    return "".join(p.text for p in task.status.message.parts)


# --- JSON-RPC protocol errors -------------------------------------------------


def test_malformed_json_is_parse_error(probe: ServerProcess) -> None:
    response = httpx.post(
        probe.url + "/",
        content=b'{"jsonrpc": "2.0", "id": 1, "method": ',
        headers={**A2A_HEADERS, "content-type": "application/json"},
        timeout=10,
    )
    assert response.json()["error"]["code"] == -32700


def test_unknown_method(probe: ServerProcess) -> None:
    reply = rpc(probe, "NoSuchMethod", {})
    assert reply["error"]["code"] == -32601


def test_raw_client_without_version_header_is_refused(probe: ServerProcess) -> None:
    # A 1.0 method without `A2A-Version: 1.0` is treated as another protocol version.
    reply = rpc(probe, "SendMessage", send_params("hi"), headers={})
    assert "error" in reply and "result" not in reply
    assert reply["error"]["code"] == -32009


def test_rest_without_version_header_is_refused(probe: ServerProcess) -> None:
    response = httpx.post(probe.url + "/rest/message:send", json=send_params("hi"), timeout=10)
    assert response.status_code == 400
    assert "VERSION_NOT_SUPPORTED" in response.text
    ok = httpx.post(
        probe.url + "/rest/message:send", json=send_params("hi"), headers=A2A_HEADERS, timeout=10
    )
    assert ok.status_code == 200
    assert ok.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


def test_raw_send_message_1_0(probe: ServerProcess) -> None:
    reply = rpc(probe, "SendMessage", send_params("raw hello"))
    task = reply["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    text = "".join(p["text"] for a in task["artifacts"] for p in a["parts"])
    assert text == "probe: raw hello"


def test_raw_streaming_message_1_0(probe: ServerProcess) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "SendStreamingMessage",
        "params": send_params("sse hello"),
    }
    response, events = post_sse(probe.url + "/", body, headers=A2A_HEADERS, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    results = [e["result"] for e in events]
    assert "task" in results[0]
    assert results[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    # Read as A2A says: append adds to the artifact, append=false replaces it.
    streamed = ""
    for r in results:
        if "artifactUpdate" in r:
            update = r["artifactUpdate"]
            chunk = "".join(p["text"] for p in update["artifact"]["parts"])
            streamed = streamed + chunk if update.get("append") else chunk
    assert streamed == "probe: sse hello"
    # The last artifact update is the closing one: the whole answer, replacing.
    closing = [r["artifactUpdate"] for r in results if "artifactUpdate" in r][-1]
    assert closing.get("lastChunk") and not closing.get("append")


def test_v0_3_message_send_still_answered(probe: ServerProcess) -> None:
    # A 0.3 client: no version header, 0.3 method name and message shape.
    body = {
        "jsonrpc": "2.0",
        "id": "legacy-1",
        "method": "message/send",
        "params": {
            "message": {
                "kind": "message",
                "role": "user",
                "messageId": str(uuid.uuid4()),
                "parts": [{"kind": "text", "text": "from the past"}],
            }
        },
    }
    response = httpx.post(probe.url + "/", json=body, timeout=10)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["id"] == "legacy-1"
    result = reply["result"]
    assert result["kind"] == "task"
    assert result["status"]["state"] == "completed"
    text = "".join(p["text"] for a in result["artifacts"] for p in a["parts"])
    assert text == "probe: from the past"


# --- task outcomes ---------------------------------------------------------------


async def test_adapter_failure_fails_the_task_with_its_error(probe: ServerProcess) -> None:
    task = await send(probe, user_message("fail: the model server went away"))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "RuntimeError" in status_text(task)
    assert "the model server went away" in status_text(task)


NOT_A_GENERATOR = """
from molecule_runtime.adapters import BaseAdapter


class Adapter(BaseAdapter):
    @staticmethod
    def name():
        return "returns-text"

    async def stream(self, task):
        return "a coroutine, not an async generator"
"""


async def test_stream_that_is_not_a_generator_fails_clearly(server_factory, tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    (template / "adapter.py").write_text(NOT_A_GENERATOR)
    server = server_factory(env={"ADAPTER_MODULE": "adapter"}, cwd=template)
    task = await send(server, user_message("hi"))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "expected an async generator" in status_text(task)
    assert "never awaited" not in server.log()


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([], id="no-parts"),
        pytest.param([Part(text="")], id="empty-text"),
        pytest.param([Part(text="   \n")], id="blank-text"),
    ],
)
async def test_message_without_a_usable_part_is_rejected(probe: ServerProcess, parts: list[Part]) -> None:
    # A data-only or file-only message is taken (tests/test_parts.py).
    message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=parts)
    if not parts:
        # The SDK's request validation refuses a message without parts before the
        # runtime sees it: -32602 naming the field.
        with pytest.raises(InvalidParamsError) as refused:
            await send(probe, message)
        assert "message.parts" in str(refused.value.data)
        return
    task = await send(probe, message)
    assert task.status.state == TaskState.TASK_STATE_REJECTED
    assert "text" in status_text(task).lower()
    assert not task_text(task)


async def test_history_across_tasks_in_one_context(probe: ServerProcess) -> None:
    first = await send(probe, user_message("the first question"))
    context_id = first.context_id
    second = await send(probe, user_message("history", context_id=context_id))
    assert second.context_id == context_id and second.id != first.id
    history = json.loads(task_text(second))
    assert history == [["user", "the first question"], ["assistant", "probe: the first question"]]
    # Another conversation does not see it.
    fresh = await send(probe, user_message("history"))
    assert json.loads(task_text(fresh)) == []


# --- health and card -------------------------------------------------------------


def test_healthz(probe: ServerProcess) -> None:
    response = httpx.get(probe.url + "/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_body(probe: ServerProcess) -> None:
    response = httpx.get(probe.url + "/readyz", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["mode"] == "direct"
    assert body["store"] == "ok"
    assert body["adapter"] == "probe"
    assert body["status"] == "ready"
    assert body["workspace_id"] == "ws-protocol"


def test_agent_card(server_factory, tmp_path: Path) -> None:
    # Its own server: the client helpers follow the card's URLs, which point elsewhere here.
    template = template_repo(tmp_path / "template")
    server = server_factory(
        env={"ADAPTER_MODULE": "adapter", "PUBLIC_URL": PUBLIC_URL + "/"}, cwd=template
    )
    response = httpx.get(server.url + "/.well-known/agent-card.json", timeout=5)
    assert response.status_code == 200
    card = response.json()
    assert card["name"] == "probe agent"
    assert card["description"] == "Probe adapter of the molecule-runtime tests."
    assert [s["id"] for s in card["skills"]] == ["probe"]
    assert card["capabilities"]["streaming"] is True
    interfaces = {i["protocolBinding"]: i for i in card["supportedInterfaces"]}
    assert interfaces["JSONRPC"]["url"] == PUBLIC_URL + "/"
    assert interfaces["HTTP+JSON"]["url"] == PUBLIC_URL + "/rest"
    assert {i["protocolVersion"] for i in interfaces.values()} == {"1.0"}
    assert "securitySchemes" not in card


def test_adapter_gets_options(probe: ServerProcess) -> None:
    options = json.loads((probe.workdir / "data" / "setup-options.json").read_text())
    assert options == {"flavour": "tests"}


async def test_get_unknown_task(probe: ServerProcess) -> None:
    client = await make_client(probe.url)
    try:
        with pytest.raises(Exception, match=r"(?i)not found"):
            await client.get_task(GetTaskRequest(id="no-such-task"))
    finally:
        await client.close()


def test_default_card_advertises_the_listening_address(probe: ServerProcess) -> None:
    card = httpx.get(probe.url + "/.well-known/agent-card.json", timeout=5).json()
    urls = sorted(i["url"] for i in card["supportedInterfaces"])
    assert urls == [probe.url + "/", probe.url + "/rest"]

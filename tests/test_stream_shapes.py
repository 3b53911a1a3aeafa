"""What a stream looks like on the wire, for clients that read it literally (the official
JS SDK, Google ADK, the TCK), over real HTTP in both modes (real Temporal):

- a stream that answers an `input-required` task begins with the Task (A2A 1.0 §3.1.2:
  a task lifecycle stream MUST begin with the Task object), on JSON-RPC, HTTP+JSON and
  gRPC, with its SSE ids increasing;
- HTTP+JSON answers in the media type the client used, `application/json` when it
  named none (A2A's HTTP+JSON binding §11.1; the SDK labels them `application/a2a+json`).
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskState

from tests.support.a2a import stream_events, user_message
from tests.support.grpc_client import grpc_env, make_grpc_client
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import assert_increasing, read_frames, state_of
from tests.test_submission import MODES, rpc_send, submission_env

BINDINGS = ["JSONRPC", "HTTP+JSON"]


@pytest.fixture(scope="module", params=MODES)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp(f"shapes-{request.param}")
    env = submission_env(request.param, request, workdir / "records", **grpc_env())
    with running_server(workdir, env) as server:
        yield server


def answer_request(binding: str, base: str, task_id: str, text: str):
    message = {
        "role": "ROLE_USER",
        "messageId": str(uuid.uuid4()),
        "taskId": task_id,
        "parts": [{"text": text}],
    }
    if binding == "JSONRPC":
        body = {"jsonrpc": "2.0", "id": 3, "method": "SendStreamingMessage", "params": {"message": message}}
        return "POST", f"{base}/", body
    return "POST", f"{base}/rest/message:stream", {"message": message}


@pytest.mark.parametrize("binding", BINDINGS)
async def test_the_stream_of_an_answer_begins_with_the_task(
    served: ServerProcess, binding: str
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        first = {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": "ask a"}]}
        asked = (await rpc_send(http, served.url, first))["result"]["task"]
        assert asked["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        # An answer that asks again, then one that ends the task.
        for text, end in (("ask b", "TASK_STATE_INPUT_REQUIRED"), ("bye", "TASK_STATE_COMPLETED")):
            frames = await read_frames(http, answer_request(binding, served.url, asked["id"], text))
            kinds = [next(iter(payload)) for _, payload in frames]
            assert kinds[0] == "task", kinds
            task = frames[0][1]["task"]
            assert task["id"] == asked["id"] and task["contextId"] == asked["contextId"]
            assert task["status"]["state"] != "TASK_STATE_INPUT_REQUIRED", task["status"]
            assert state_of(frames[-1][1]) == end
            assert kinds.count("task") == 1
            assert_increasing(frames)


async def test_over_grpc_the_stream_of_an_answer_begins_with_the_task(served: ServerProcess) -> None:
    client = await make_grpc_client(served.url)
    try:
        asked = [e async for e in stream_events(client, user_message("ask g"))]
        task = asked[0].task
        assert asked[-1].status_update.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        answer = [e async for e in stream_events(client, user_message("bye", task_id=task.id))]
        kinds = [e.WhichOneof("payload") for e in answer]
        assert kinds[0] == "task" and kinds.count("task") == 1, kinds
        assert answer[0].task.id == task.id
        assert answer[0].task.status.state == TaskState.TASK_STATE_WORKING
        assert answer[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    finally:
        await client.close()


async def test_rest_answers_in_the_media_type_the_client_used(served: ServerProcess) -> None:
    message = {"message": {"role": "ROLE_USER", "messageId": "", "parts": [{"text": "hi"}]}}
    async with httpx.AsyncClient(timeout=60) as http:
        for sent, accept, expected in (
            ("application/json", None, "application/json"),
            ("application/json; charset=utf-8", "application/a2a+json", "application/a2a+json"),
            ("application/a2a+json", None, "application/a2a+json"),
        ):
            message["message"]["messageId"] = str(uuid.uuid4())
            headers = {"A2A-Version": "1.0", "Content-Type": sent}
            if accept:
                headers["Accept"] = accept
            answer = await http.post(
                f"{served.url}/rest/message:send", content=json.dumps(message), headers=headers
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == expected, (sent, accept)
        for accept, expected in (
            (None, "application/json"),
            ("application/json", "application/json"),
            ("application/a2a+json", "application/a2a+json"),
            ("application/a2a+json, application/json", "application/json"),
        ):
            headers = {"A2A-Version": "1.0", **({"Accept": accept} if accept else {})}
            listed = await http.get(f"{served.url}/rest/tasks", headers=headers)
            missing = await http.get(f"{served.url}/rest/tasks/{uuid.uuid4()}", headers=headers)
            assert listed.status_code == 200 and missing.status_code == 404
            assert listed.headers["content-type"] == expected, accept
            assert missing.headers["content-type"] == expected, accept

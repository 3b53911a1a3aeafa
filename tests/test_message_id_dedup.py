"""MOLECULE_MESSAGE_ID_DEDUP=false, over real HTTP in both modes (real Temporal): a
client that reuses one messageId (the official A2A TCK gives every message of a
scenario the same id) gets every send taken as a new message, also an answer to a
question in the task the id was first used for. Exactly-once by messageId
(the default) is tested in tests/test_submission.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.fixtures.submission_adapter import runs
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import A2A, sse_frames
from tests.test_submission import MODES, rpc_send, submission_env, unique


@pytest.fixture(scope="module", params=MODES)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp(f"no-dedup-{request.param}")
    records = workdir / "records"
    env = submission_env(request.param, request, records, MOLECULE_MESSAGE_ID_DEDUP="false")
    with running_server(workdir, env) as server:
        yield server, records


def message(message_id: str, text: str, **extra: str) -> dict:
    return {"role": "ROLE_USER", "messageId": message_id, "parts": [{"text": text}], **extra}


async def test_a_reused_message_id_is_a_new_message_each_time(
    served: tuple[ServerProcess, Path],
) -> None:
    server, records = served
    message_id = str(uuid.uuid4())
    text = unique("again")
    async with httpx.AsyncClient(timeout=60) as http:
        first = (await rpc_send(http, server.url, message(message_id, text)))["result"]["task"]
        # The same message again: a second task, the adapter runs again.
        second = (await rpc_send(http, server.url, message(message_id, text)))["result"]["task"]
        # The same id on another message (another text, another conversation).
        other = unique("other")
        third = (
            await rpc_send(
                http, server.url, message(message_id, other, contextId=str(uuid.uuid4()))
            )
        )["result"]["task"]
        rest = await http.post(
            f"{server.url}/rest/message:send", json={"message": message(message_id, other)},
            headers=A2A,
        )
        assert rest.status_code == 200, rest.text
        fourth = rest.json()["task"]
    assert len({first["id"], second["id"], third["id"], fourth["id"]}) == 4
    for task in (first, second, third, fourth):
        assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
    assert len([r for r in runs(records) if r.get("text") == text]) == 2
    assert len([r for r in runs(records) if r.get("text") == other]) == 2


async def test_an_answer_reusing_the_question_s_message_id_continues_the_task(
    served: tuple[ServerProcess, Path],
) -> None:
    server, records = served
    message_id = str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=60) as http:
        asked = (await rpc_send(http, server.url, message(message_id, "ask first")))["result"][
            "task"
        ]
        assert asked["status"]["state"] == "TASK_STATE_INPUT_REQUIRED", asked
        # The answer reuses the id, streamed: a new turn, not a repeat of the first.
        body = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "SendStreamingMessage",
            "params": {"message": message(message_id, "ask second", taskId=asked["id"])},
        }
        async with http.stream("POST", f"{server.url}/", json=body, headers=A2A) as response:
            events = [payload async for _, payload in sse_frames(response)]
        assert "error" not in events[-1], events[-1]
        done = (
            await rpc_send(http, server.url, message(message_id, "bye", taskId=asked["id"]))
        )["result"]["task"]
    assert done["id"] == asked["id"]
    assert done["status"]["state"] == "TASK_STATE_COMPLETED", done
    mine = [r for r in runs(records) if r["task_id"] == asked["id"]]
    assert [r["text"] for r in mine] == ["ask first", "ask second", "bye"]
    # Each turn sees the turns before it, and keeps an answer of its own.
    assert [t for role, t in mine[2]["history"] if role == "user"] == ["ask first", "ask second"]
    answers = [a for a in done["artifacts"]]
    assert len(answers) == 3, answers

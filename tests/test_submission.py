"""Submission rules over real HTTP with the a2a-sdk client, in both modes (real Temporal):
exactly-once messages (repeats while streaming, concurrent, after a restart), a reused
message id, and the A2A 1.0 conversation rules (taskId without contextId, a contradicting
contextId)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from a2a.client import Client
from a2a.types.a2a_pb2 import Message, SendMessageRequest, StreamResponse, TaskState

from molecule_runtime.store import open_stores
from molecule_runtime.store.claims_table import MessageClaim, now_utc
from tests.fixtures.submission_adapter import runs
from tests.support.a2a import make_client, task_text, user_message
from tests.support.durable import own_temporal, streamed_text
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import A2A

ADAPTER = Path(__file__).parent / "fixtures" / "submission_adapter.py"
MODES = ["direct", pytest.param("durable", marks=pytest.mark.temporal)]


def submission_env(
    mode: str, request: pytest.FixtureRequest | None, record_dir: Path, **extra: str
) -> dict[str, str]:
    env = {
        "ADAPTER_MODULE": str(ADAPTER),
        "ADAPTER_OPTIONS": json.dumps({"record_dir": str(record_dir)}),
        "STREAM_BATCH_WINDOW": "0",
        **extra,
    }
    if mode == "durable":
        assert request is not None
        env |= {
            **own_temporal(request.getfixturevalue("temporal_server").address),
            "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
            "TEMPORAL_CONNECT_TIMEOUT": "2",
        }
    return env


@pytest.fixture(scope="module", params=MODES)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A server of the default policy in each mode, shared by this module's tests
    (each test uses texts of its own), with the dir its adapter records runs in."""
    workdir = tmp_path_factory.mktemp(f"submission-{request.param}")
    records = workdir / "records"
    with running_server(workdir, submission_env(request.param, request, records)) as server:
        yield server, records


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


async def ran(records: Path, text: str) -> None:
    """Wait until the adapter started on `text`."""
    for _ in range(1000):
        if runs_of(records, text):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never ran")


def runs_of(record_dir: Path, text: str) -> list[dict]:
    return [r for r in runs(record_dir) if r.get("text") == text]


def same(message: Message) -> Message:
    copy = Message()
    copy.CopyFrom(message)
    return copy


async def stream_all(client: Client, message: Message) -> list[StreamResponse]:
    return [e async for e in client.send_message(SendMessageRequest(message=same(message)))]


def final_task_state(events: list[StreamResponse]) -> int:
    last = events[-1]
    return last.task.status.state if last.HasField("task") else last.status_update.status.state


def stream_task_id(events: list[StreamResponse]) -> str:
    first = events[0]
    return first.task.id if first.HasField("task") else first.status_update.task_id


async def rpc_send(http: httpx.AsyncClient, base: str, message: dict) -> dict:
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    return (await http.post(f"{base}/", json=body, headers=A2A)).json()


async def test_a_repeated_message_attaches_to_its_task_and_runs_once(
    served: tuple[ServerProcess, Path],
) -> None:
    server, records = served
    text = unique("slow 12")
    client = await make_client(server.url)
    blocking = await make_client(server.url, streaming=False)
    try:
        message = user_message(text)
        first = asyncio.create_task(stream_all(client, message))
        await ran(records, text)
        # While the first still streams: a streamed repeat and concurrent blocking repeats.
        repeat_stream = asyncio.create_task(stream_all(client, message))
        repeats = [
            asyncio.create_task(anext(blocking.send_message(SendMessageRequest(message=same(message)))))
            for _ in range(3)
        ]
        first_events = await asyncio.wait_for(first, 30)
        repeat_events = await asyncio.wait_for(repeat_stream, 30)
        repeated = [r.task for r in await asyncio.wait_for(asyncio.gather(*repeats), 30)]

        task_id = stream_task_id(first_events)
        assert stream_task_id(repeat_events) == task_id
        assert final_task_state(repeat_events) == TaskState.TASK_STATE_COMPLETED
        # It joined mid-answer: its first event is the task so far, then the rest.
        assert repeat_events[0].WhichOneof("payload") == "task"
        assert streamed_text(repeat_events) == "".join(f"s{i} " for i in range(12))
        assert {t.id for t in repeated} == {task_id}
        assert {t.status.state for t in repeated} == {TaskState.TASK_STATE_COMPLETED}
        assert task_text(repeated[0]) == "".join(f"s{i} " for i in range(12))
        # A repeat after the end gets the finished task; the adapter ran once.
        after = await stream_all(client, message)
        assert [e.task.id for e in after] == [task_id]
        assert after[0].task.status.state == TaskState.TASK_STATE_COMPLETED
        assert len(runs_of(records, text)) == 1
    finally:
        await client.close()
        await blocking.close()


async def test_a_repeat_after_a_restart_returns_the_stored_task(
    server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = submission_env("direct", None, records)
    workdir = tmp_path / "srv"
    server = server_factory(env, workdir=workdir)
    message = user_message("before the restart")
    client = await make_client(server.url, streaming=False)
    try:
        sent = await anext(client.send_message(SendMessageRequest(message=same(message))))
    finally:
        await client.close()
    server.stop()
    again = server_factory(env, workdir=workdir)
    client = await make_client(again.url, streaming=False)
    try:
        repeated = await anext(client.send_message(SendMessageRequest(message=same(message))))
    finally:
        await client.close()
    assert repeated.task.id == sent.task.id
    assert repeated.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(repeated.task) == "ok: before the restart"
    assert len(runs_of(records, "before the restart")) == 1


async def test_a_message_id_reused_by_another_message_is_invalid_params(
    served: tuple[ServerProcess, Path],
) -> None:
    server, records = served
    message_id = str(uuid.uuid4())
    text = unique("first")
    first = {"role": "ROLE_USER", "messageId": message_id, "parts": [{"text": text}]}
    async with httpx.AsyncClient(timeout=30) as http:
        taken = await rpc_send(http, server.url, first)
        context_id = taken["result"]["task"]["contextId"]
        other_text = {**first, "parts": [{"text": "something else"}]}
        other_context = {**first, "contextId": str(uuid.uuid4())}
        for reused in (other_text, other_context):
            refused = await rpc_send(http, server.url, reused)
            assert refused["error"]["code"] == -32602, refused
            assert message_id in refused["error"]["message"]
            assert context_id in refused["error"]["message"]
        rest = await http.post(
            f"{server.url}/rest/message:send", json={"message": other_text}, headers=A2A
        )
        assert rest.status_code == 400, rest.text
        # The same message in its own conversation is a repeat, not a reuse.
        repeat = await rpc_send(http, server.url, {**first, "contextId": context_id})
        assert repeat["result"]["task"]["id"] == taken["result"]["task"]["id"]
    assert len(runs_of(records, text)) == 1


async def test_answers_carrying_only_the_task_id_continue_its_conversation(
    served: tuple[ServerProcess, Path],
) -> None:
    server, records = served
    client = await make_client(server.url, streaming=False)

    async def send(message: Message):
        return (await anext(client.send_message(SendMessageRequest(message=same(message))))).task

    try:
        asked = await send(user_message("ask one"))
        mine = lambda: [r for r in runs(records) if r["task_id"] == asked.id]  # noqa: E731
        assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        second = user_message("ask two", task_id=asked.id)
        again = await send(second)
        assert again.id == asked.id and again.context_id == asked.context_id
        assert again.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        # A repeated answer does not start another turn.
        assert (await send(second)).status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        done = await send(user_message("bye", task_id=asked.id))
        assert done.status.state == TaskState.TASK_STATE_COMPLETED, done.status
        assert done.context_id == asked.context_id
        assert [r["text"] for r in mine()] == ["ask one", "ask two", "bye"]
        assert [text for role, text in mine()[2]["history"] if role == "user"] == [
            "ask one",
            "ask two",
        ]
    finally:
        await client.close()


async def test_a_contradicting_context_is_refused_and_the_task_is_untouched(
    served: tuple[ServerProcess, Path],
) -> None:
    server, records = served
    async with httpx.AsyncClient(timeout=30) as http:
        asked = (
            await rpc_send(
                http, server.url, {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": "ask x"}]}
            )
        )["result"]["task"]
        before = (await http.get(f"{server.url}/rest/tasks/{asked['id']}", headers=A2A)).json()
        wrong = {
            "role": "ROLE_USER",
            "messageId": str(uuid.uuid4()),
            "parts": [{"text": "bye"}],
            "taskId": asked["id"],
            "contextId": str(uuid.uuid4()),
        }
        refused = await rpc_send(http, server.url, wrong)
        assert refused["error"]["code"] == -32602, refused
        after = (await http.get(f"{server.url}/rest/tasks/{asked['id']}", headers=A2A)).json()
        assert after == before
        assert after["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        # The right answer still works (the refused message took no id).
        answer = {**wrong}
        del answer["contextId"]
        done = (await rpc_send(http, server.url, answer))["result"]["task"]
        assert done["status"]["state"] == "TASK_STATE_COMPLETED"
    assert [r["text"] for r in runs(records) if r["task_id"] == asked["id"]] == ["ask x", "bye"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_one_of_many_concurrent_claims_wins(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The unique key decides between concurrent claims of one message id (two engines:
    as two replicas would); a released id can be claimed again, an old one is pruned."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/tasks.db"
    else:
        url = request.getfixturevalue("postgres").database()
    replicas = [await open_stores(url, idempotency_retention=0) for _ in range(2)]
    try:
        claims = [
            MessageClaim("alice", "m-1", f"task-{i}", "ctx", "d", now_utc()) for i in range(20)
        ]
        results = await asyncio.gather(
            *(replicas[i % 2].message_ids.claim(c) for i, c in enumerate(claims))
        )
        winners = [c for c, r in zip(claims, results, strict=True) if r is None]
        assert len(winners) == 1
        assert {r.task_id for r in results if r is not None} == {winners[0].task_id}
        # Its task is not stored yet: a pending task of the conversation.
        pending = await replicas[1].message_ids.recent_in_context(
            "alice", "ctx", now_utc() - timedelta(minutes=1)
        )
        assert [c.task_id for c in pending] == [winners[0].task_id]
        # Another principal's id of the same name is its own.
        bob = MessageClaim("bob", "m-1", "task-b", "ctx", "d", now_utc())
        assert await replicas[1].message_ids.claim(bob) is None
        await replicas[1].message_ids.release(winners[0])
        assert await replicas[0].message_ids.claim(claims[0]) is None
        assert await replicas[0].message_ids.prune(now_utc() + timedelta(seconds=1)) == 2
        assert await replicas[1].message_ids.get("alice", "m-1") is None
    finally:
        for stores in replicas:
            await stores.aclose()


async def test_the_same_message_sent_to_two_replicas_at_once_runs_once(
    postgres, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = submission_env("direct", None, records, TASK_STORE_URL=postgres.database())
    replicas = [server_factory(env, workdir=tmp_path / name) for name in ("a", "b")]
    clients = [await make_client(r.url, streaming=False) for r in replicas]
    try:
        text = unique("slow 3")
        message = user_message(text)
        sent = await asyncio.gather(
            *(
                anext(client.send_message(SendMessageRequest(message=same(message))))
                for client in clients * 2
            )
        )
    finally:
        for client in clients:
            await client.close()
    assert len({r.task.id for r in sent}) == 1
    assert {r.task.status.state for r in sent} == {TaskState.TASK_STATE_COMPLETED}
    assert len(runs_of(records, text)) == 1

"""SubscribeToTask across input-required (open until the task is terminal, on every
binding), and followers sharing one reader of the event log.

Real servers (direct and durable mode, SQLite) with the gate adapter
(tests/fixtures/gate_adapter.py): `ask` asks a question; an answer `<name>` is
held until the test drops `release-<name>` in the data dir, then answered
`done <name>` in three chunks. One running slot, so an answer can be made to
wait in admission's line while the task still shows input-required.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import SubscribeToTaskRequest, TaskState

from tests.support.grpc_client import grpc_env, make_grpc_client
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import (
    A2A,
    Frame,
    message_json,
    read_frames,
    sse_frames,
    state_of,
    stream_request,
    subscribe_request,
    text_of,
)
from tests.support.temporal import TemporalDevServer

GATE = Path(__file__).parent / "fixtures" / "gate_adapter.py"
ENV = {"ADAPTER_MODULE": str(GATE), "MOLECULE_MAX_RUNNING_TASKS": "1"}
FOLLOWERS = 150


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("subs-direct"), {**ENV, **grpc_env()}) as server:
        yield server


@pytest.fixture(scope="module")
def durable(
    tmp_path_factory: pytest.TempPathFactory, temporal_server: TemporalDevServer
) -> Iterator[ServerProcess]:
    queue = f"subs-{uuid.uuid4().hex[:8]}"
    env = {
        **ENV,
        **grpc_env(),
        "TEMPORAL_HOST": temporal_server.address,
        "TEMPORAL_TASK_QUEUE": queue,
        "WORKSPACE_ID": queue,
    }
    with running_server(tmp_path_factory.mktemp("subs-durable"), env) as server:
        yield server


@pytest.fixture(params=["direct", "durable"])
def server(request: pytest.FixtureRequest) -> ServerProcess:
    return request.getfixturevalue(request.param)


def release(server: ServerProcess, name: str) -> None:
    (server.workdir / "data" / f"release-{name}").write_text("")


async def ask(http: httpx.AsyncClient, server: ServerProcess) -> tuple[str, list[Frame]]:
    """A task that asks a question: its id and the frames of its stream."""
    frames = await read_frames(http, stream_request("JSONRPC", server.url, "ask"))
    assert state_of(frames[-1][1]) == "TASK_STATE_INPUT_REQUIRED", frames
    return frames[0][1]["task"]["id"], frames


async def metric(http: httpx.AsyncClient, server: ServerProcess, name: str) -> float:
    text = (await http.get(f"{server.url}/metrics")).text
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert found is not None, name
    return float(found.group(1))


async def wait_metric(
    http: httpx.AsyncClient, server: ServerProcess, name: str, value: float, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await metric(http, server, name)) != value:
        assert time.monotonic() < deadline, f"{name} is {seen}, not {value}"
        await asyncio.sleep(0.05)


def answer_stream(server: ServerProcess, task_id: str, text: str) -> tuple[str, str, Any]:
    message = message_json(text, task_id=task_id)
    body = {"jsonrpc": "2.0", "id": 3, "method": "SendStreamingMessage", "params": {"message": message}}
    return "POST", f"{server.url}/", body


@pytest.mark.parametrize("binding", ["JSONRPC", "REST"])
@pytest.mark.parametrize("resume", [None, "current", "start"], ids=["no-last-event-id", "at-current-offset", "replay-from-0"])
async def test_a_subscription_to_a_waiting_task_stays_open_until_the_task_ends(
    server: ServerProcess, binding: str, resume: str | None
) -> None:
    # A2A 1.0 §3.1.6: SubscribeToTask works for any task not terminal, and its stream
    # ends when the task reaches a terminal state, not at the question.
    name = f"w{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=60) as http:
        task_id, asked = await ask(http, server)
        last_event_id = {None: None, "current": asked[-1][0], "start": 0}[resume]
        subscriber = asyncio.create_task(
            read_frames(
                http,
                subscribe_request(binding, server.url, task_id),
                last_event_id=last_event_id,
                timeout=60,
            )
        )
        await wait_metric(http, server, "molecule_event_log_followers", 1)
        await asyncio.sleep(1.0)
        assert not subscriber.done(), subscriber.result()
        release(server, name)
        answered = await read_frames(http, answer_stream(server, task_id, name), timeout=60)
        frames = await subscriber
    if resume == "start":
        # A replay passes the question's events and goes on.
        assert frames[: len(asked)] == asked
        frames = frames[len(asked) :]
    elif resume is None:
        offset, snapshot = frames[0]
        assert "task" in snapshot and state_of(snapshot) == "TASK_STATE_INPUT_REQUIRED"
        assert offset >= asked[-1][0]
    states = [state_of(p) for _, p in frames if state_of(p)]
    assert states[-2:] == ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"], states
    assert set(states[:-2]) <= {"TASK_STATE_INPUT_REQUIRED"}, states
    assert text_of(frames) == f"done {name}"
    opening_offset = answered[0][0]
    assert [f for f in frames if f[0] > opening_offset] == answered[1:]


async def test_a_subscription_stays_open_across_a_second_question(server: ServerProcess) -> None:
    # The answer `ask` asks again: the subscriber sees both questions and the end.
    name = f"q{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=60) as http:
        task_id, _ = await ask(http, server)
        subscriber = asyncio.create_task(
            read_frames(http, subscribe_request("REST", server.url, task_id), timeout=60)
        )
        await wait_metric(http, server, "molecule_event_log_followers", 1)
        again = await read_frames(http, answer_stream(server, task_id, "ask"), timeout=60)
        assert state_of(again[-1][1]) == "TASK_STATE_INPUT_REQUIRED"  # a send ends there
        await asyncio.sleep(0.5)
        assert not subscriber.done(), subscriber.result()
        release(server, name)
        await read_frames(http, answer_stream(server, task_id, name), timeout=60)
        frames = await subscriber
    states = [state_of(p) for _, p in frames if state_of(p)]
    assert states.count("TASK_STATE_WORKING") == 2, states
    assert states[-1] == "TASK_STATE_COMPLETED", states
    assert text_of(frames) == f"done {name}"


async def test_a_grpc_subscription_to_a_waiting_task_stays_open_until_the_task_ends(
    server: ServerProcess,
) -> None:
    name = f"g{uuid.uuid4().hex[:6]}"
    client = await make_grpc_client(server.url)
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            task_id, _ = await ask(http, server)

            async def follow() -> list[Any]:
                return [event async for event in client.subscribe(SubscribeToTaskRequest(id=task_id))]

            subscriber = asyncio.create_task(follow())
            await wait_metric(http, server, "molecule_event_log_followers", 1)
            await asyncio.sleep(1.0)
            assert not subscriber.done(), subscriber.result()
            release(server, name)
            await read_frames(http, answer_stream(server, task_id, name), timeout=60)
            events = await asyncio.wait_for(subscriber, 60)
    finally:
        await client.close()
    states = [
        TaskState.Name(e.task.status.state if e.HasField("task") else e.status_update.status.state)
        for e in events
        if e.HasField("task") or e.HasField("status_update")
    ]
    assert states[0] == "TASK_STATE_INPUT_REQUIRED", states
    assert states[-1] == "TASK_STATE_COMPLETED", states


async def test_a_subscriber_that_leaves_a_waiting_task_costs_nothing_after(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        await wait_metric(http, server, "molecule_event_log_readers", 0)
        task_id, _ = await ask(http, server)
        method, url, body = subscribe_request("JSONRPC", server.url, task_id)
        async with http.stream(method, url, json=body, headers=A2A) as response:
            async for _, payload in sse_frames(response):
                assert state_of(payload) == "TASK_STATE_INPUT_REQUIRED"
                break
            await wait_metric(http, server, "molecule_event_log_readers", 1)
        # The client left: its follower and the task's reader are gone.
        await wait_metric(http, server, "molecule_event_log_followers", 0)
        await wait_metric(http, server, "molecule_event_log_readers", 0)


@pytest.mark.parametrize("replay", [False, True], ids=["no-last-event-id", "replay-from-0"])
async def test_a_subscriber_attached_before_the_answer_runs_sees_it_through(
    server: ServerProcess, replay: bool
) -> None:
    name = f"n{uuid.uuid4().hex[:6]}"
    hold = f"h{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=60) as http:
        task_id, asked = await ask(http, server)
        # The only running slot is taken: the answer waits in line, and the
        # task still shows its question meanwhile.
        holder = asyncio.create_task(
            read_frames(http, stream_request("JSONRPC", server.url, hold), timeout=60)
        )
        await wait_metric(http, server, "molecule_admission_running_tasks", 1)
        answering = asyncio.create_task(
            read_frames(http, answer_stream(server, task_id, name), timeout=60)
        )
        await wait_metric(http, server, "molecule_admission_queued_tasks", 1)
        # The executor takes the answer over from the handler at once.
        await asyncio.sleep(0.3)
        subscriber = asyncio.create_task(
            read_frames(
                http,
                subscribe_request("JSONRPC", server.url, task_id),
                last_event_id=0 if replay else None,
                timeout=60,
            )
        )
        await asyncio.sleep(0.5)
        assert not subscriber.done(), subscriber.result()
        release(server, hold)
        release(server, name)
        frames = await subscriber
        answered = await answering
        await holder
    if replay:
        assert frames[: len(asked)] == asked
        frames = frames[len(asked) :]
    else:
        assert state_of(frames[0][1]) == "TASK_STATE_INPUT_REQUIRED"  # the snapshot
    states = [state_of(p) for _, p in frames if state_of(p)]
    # Before WORKING only the task with the answer stored (still input-required).
    assert states[-2:] == ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"], states
    assert set(states[:-2]) <= {"TASK_STATE_INPUT_REQUIRED"}, states
    assert text_of(frames) == f"done {name}"
    # The subscriber saw what the answer's own stream carried, from WORKING on. That stream
    # opens with the Task (A2A 1.0 §3.1.2) at the offset of the WORKING update, which the
    # subscriber got as the update itself.
    opening_offset, opening = answered[0]
    assert state_of(opening) == "TASK_STATE_WORKING" and "task" in opening
    at_opening = [p for offset, p in frames if offset == opening_offset]
    assert [state_of(p) for p in at_opening] == ["TASK_STATE_WORKING"]
    assert [f for f in frames if f[0] > opening_offset] == answered[1:]


async def test_idle_followers_of_one_task_share_one_reader(direct: ServerProcess) -> None:
    name = f"f{uuid.uuid4().hex[:6]}"
    limits = httpx.Limits(max_connections=FOLLOWERS + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await wait_metric(http, direct, "molecule_event_log_followers", 0)
        running = asyncio.create_task(
            read_frames(http, stream_request("JSONRPC", direct.url, name), timeout=60)
        )
        await wait_metric(http, direct, "molecule_admission_running_tasks", 1)
        task_id = ""
        while not task_id:
            listed = await http.post(
                f"{direct.url}/",
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "ListTasks",
                    "params": {"status": "TASK_STATE_WORKING"},
                },
                headers=A2A,
            )
            tasks = listed.json()["result"].get("tasks", [])
            task_id = tasks[0]["id"] if tasks else ""
        followers = [
            asyncio.create_task(
                read_frames(http, subscribe_request("JSONRPC", direct.url, task_id), timeout=60)
            )
            for _ in range(FOLLOWERS)
        ]
        await wait_metric(http, direct, "molecule_event_log_followers", FOLLOWERS, timeout=40)
        assert await metric(http, direct, "molecule_event_log_readers") == 1
        reads = await metric(http, direct, "molecule_event_log_reads_total")
        await asyncio.sleep(2.0)
        idle_reads = await metric(http, direct, "molecule_event_log_reads_total") - reads
        release(direct, name)
        results = await asyncio.gather(*followers)
        await running
        await wait_metric(http, direct, "molecule_event_log_readers", 0)
    # One shared poll a second while nothing is written (each follower polling
    # on its own five times a second made some 1500 reads in 2 s).
    assert idle_reads <= 4, idle_reads
    for frames in results:
        assert state_of(frames[-1][1]) == "TASK_STATE_COMPLETED"
        assert text_of(frames) == f"done {name}"

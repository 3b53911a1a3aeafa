"""Admission control over real HTTP: a running limit, a bounded line, refusals that create nothing.

The server runs with MOLECULE_MAX_RUNNING_TASKS=2 and MOLECULE_MAX_QUEUED_TASKS=3
and the gate adapter (tests/fixtures/gate_adapter.py), which holds each task
until the test drops a `release-<name>` file in the data dir. Raw httpx calls,
so the exact status codes, headers and error bodies are what is checked.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.server.agent_execution import AgentExecutor
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard
from starlette.applications import Starlette
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from molecule_runtime.execution.admission import (
    Admission,
    PrincipalTasksError,
    ServerBusyError,
    claim,
)
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import aiter_sse, message_json

GATE = Path(__file__).parent / "fixtures" / "gate_adapter.py"
A2A = {"A2A-Version": "1.0"}
MAX_RUNNING, MAX_QUEUED = 2, 3
LIMITS = {
    "ADAPTER_MODULE": str(GATE),
    "MOLECULE_MAX_RUNNING_TASKS": str(MAX_RUNNING),
    "MOLECULE_MAX_QUEUED_TASKS": str(MAX_QUEUED),
    # Tasks of one conversation run side by side here, so that they fill the line.
    "MOLECULE_CONCURRENT_MESSAGES": "parallel",
}


# ---- helpers -------------------------------------------------------------


def send_params(text: str, *, now: bool = True, **ids: str) -> dict[str, Any]:
    """SendMessage params; `now`: answer with the task at once (returnImmediately)."""
    params: dict[str, Any] = {"message": message_json(text, **ids)}
    if now:
        params["configuration"] = {"returnImmediately": True}
    return params


def rpc_body(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}


async def rest_send(http: httpx.AsyncClient, text: str, **ids: str) -> dict[str, Any]:
    reply = await http.post("/rest/message:send", json=send_params(text, **ids), headers=A2A)
    assert reply.status_code == 200, reply.text
    return reply.json()["task"]


async def rpc_send(http: httpx.AsyncClient, text: str, **ids: str) -> dict[str, Any]:
    reply = await http.post("/", json=rpc_body("SendMessage", send_params(text, **ids)), headers=A2A)
    assert reply.status_code == 200, reply.text
    assert "result" in reply.json(), reply.text
    return reply.json()["result"]["task"]


async def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON of every SSE event, JSON-RPC envelopes and errors included."""
    return [payload async for _, payload in aiter_sse(response)]


async def stream(http: httpx.AsyncClient, binding: str, text: str, **ids: str) -> list[dict[str, Any]]:
    """Every event of a streamed message, as the JSON payloads of its SSE frames."""
    if binding == "rest":
        request = http.build_request(
            "POST", "/rest/message:stream", json=send_params(text, now=False, **ids), headers=A2A
        )
    else:
        body = rpc_body("SendStreamingMessage", send_params(text, now=False, **ids))
        request = http.build_request("POST", "/", json=body, headers=A2A)
    response = await http.send(request, stream=True)
    try:
        assert response.status_code == 200, await response.aread()
        events = await sse_events(response)
    finally:
        await response.aclose()
    return [e.get("result", e) for e in events]


def first_task(events: list[dict[str, Any]]) -> dict[str, Any]:
    return events[0]["task"]


async def get_task(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    reply = await http.get(f"/rest/tasks/{task_id}", headers=A2A)
    assert reply.status_code == 200, reply.text
    return reply.json()


def state(task: dict[str, Any]) -> str:
    return task["status"]["state"]


def text_of(task: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for a in task.get("artifacts", []) for p in a["parts"])


async def tasks_in(http: httpx.AsyncClient, context_id: str) -> list[dict[str, Any]]:
    reply = await http.get("/rest/tasks", params={"contextId": context_id}, headers=A2A)
    assert reply.status_code == 200, reply.text
    return reply.json()["tasks"]


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert found, f"{name} not on /metrics"
    return float(found.group(1))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def slots(http: httpx.AsyncClient) -> tuple[float, float]:
    return (
        await metric(http, "molecule_admission_running_tasks"),
        await metric(http, "molecule_admission_queued_tasks"),
    )


async def wait_slots(http: httpx.AsyncClient, running: int, queued: int) -> None:
    async def reached() -> bool:
        return await slots(http) == (running, queued)

    await eventually(reached)


async def wait_state(http: httpx.AsyncClient, task_id: str, wanted: str) -> dict[str, Any]:
    task: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal task
        task = await get_task(http, task_id)
        return state(task) == wanted

    await eventually(reached, timeout=30)
    return task


class Gate:
    """The gate adapter's files in a server's data dir."""

    def __init__(self, server: ServerProcess) -> None:
        self.dir = server.workdir / "data"

    def started(self, name: str) -> bool:
        return (self.dir / f"started-{name}").exists()

    async def wait_started(self, *names: str) -> None:
        async def all_started() -> bool:
            return all(self.started(n) for n in names)

        await eventually(all_started)

    def release(self, *names: str) -> None:
        for name in names:
            (self.dir / f"release-{name}").write_text("go")


def assert_busy_details(details: list[dict[str, Any]]) -> None:
    info = next(d for d in details if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert info["reason"] == "SERVER_BUSY"
    assert info["metadata"] == {
        "retryAfterSeconds": "5",
        "maxRunningTasks": str(MAX_RUNNING),
        "maxQueuedTasks": str(MAX_QUEUED),
    }
    retry = next(d for d in details if d["@type"].endswith("google.rpc.RetryInfo"))
    assert retry["retryDelay"] == "5s"


def assert_busy_message(text: str) -> None:
    assert text == (
        "Server busy: 2 of 2 running slots and 3 of 3 places in line are taken "
        "(MOLECULE_MAX_RUNNING_TASKS, MOLECULE_MAX_QUEUED_TASKS). Nothing was created; "
        "send the request again in 5 seconds."
    ), text


def assert_rest_busy(reply: httpx.Response) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "5"
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert (error["code"], error["status"]) == (503, "UNAVAILABLE")
    assert_busy_message(error["message"])
    assert_busy_details(error["details"])


def assert_rpc_busy(payload: dict[str, Any], request_id: object) -> None:
    assert payload["id"] == request_id, payload
    error = payload["error"]
    assert error["code"] == -32000, payload
    assert_busy_message(error["message"])
    assert_busy_details(error["data"])


# ---- the limited server (direct mode) -------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("admission"), LIMITS) as server:
        yield server


@pytest.fixture
async def http(limited: ServerProcess) -> Any:
    async with httpx.AsyncClient(base_url=limited.url, timeout=60) as client:
        await wait_slots(client, 0, 0)  # every test starts from an idle server
        yield client


async def test_tasks_past_the_limit_wait_submitted_and_past_the_line_are_refused(
    limited: ServerProcess, http: httpx.AsyncClient
) -> None:
    gate = Gate(limited)
    ctx = str(uuid.uuid4())
    names = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    # Two streams take the two running slots: both run, created working.
    running = [
        asyncio.create_task(stream(http, "rest", names[0], context_id=ctx)),
        asyncio.create_task(stream(http, "jsonrpc", names[1], context_id=ctx)),
    ]
    await gate.wait_started(names[0], names[1])
    await wait_slots(http, 2, 0)
    # The next three are accepted and wait: submitted, adapter not started.
    queued = [
        await rpc_send(http, names[2], context_id=ctx),
        await rest_send(http, names[3], context_id=ctx),
    ]
    queued_stream = asyncio.create_task(stream(http, "jsonrpc", names[4], context_id=ctx))
    await wait_slots(http, 2, 3)
    assert [state(t) for t in queued] == ["TASK_STATE_SUBMITTED"] * 2

    async def all_stored() -> bool:
        return len(await tasks_in(http, ctx)) == 5

    await eventually(all_stored)  # the streamed one is admitted before it is stored
    listed = await tasks_in(http, ctx)
    waiting_ids = {t["id"] for t in listed if state(t) == "TASK_STATE_SUBMITTED"}
    assert {t["id"] for t in queued} < waiting_ids and len(waiting_ids) == 3
    for task_id in waiting_ids:
        assert state(await get_task(http, task_id)) == "TASK_STATE_SUBMITTED"
    assert not any(gate.started(n) for n in names[2:])
    refused_before = await metric(http, "molecule_admission_refused_total")

    # The sixth message, in every binding and form, is refused and creates nothing.
    extra = f"x-{uuid.uuid4().hex[:6]}"
    assert_rest_busy(
        await http.post("/rest/message:send", json=send_params(extra, context_id=ctx), headers=A2A)
    )
    assert_rest_busy(
        await http.post(
            "/rest/message:stream",
            json=send_params(extra, now=False, context_id=ctx),
            headers={**A2A, "Accept": "text/event-stream"},
        )
    )
    # A message naming a queued task is a new message of its conversation (in
    # parallel, MOLECULE_CONCURRENT_MESSAGES): refused as busy like the others.
    assert_rest_busy(
        await http.post(
            "/rest/message:send",
            json=send_params(extra, context_id=ctx, task_id=queued[0]["id"]),
            headers=A2A,
        )
    )
    for method in ("SendMessage", "SendStreamingMessage"):
        body = rpc_body(method, send_params(extra, now=False, context_id=ctx))
        reply = await http.post("/", json=body, headers=A2A)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.headers["retry-after"] == "5"
        assert_rpc_busy(reply.json(), body["id"])
    # A2A 0.3 (no A2A-Version header) goes through the same handler.
    v03_message = {
        "role": "user",
        "messageId": str(uuid.uuid4()),
        "parts": [{"kind": "text", "text": extra}],
        "kind": "message",
        "contextId": ctx,
    }
    body = {"jsonrpc": "2.0", "id": 7, "method": "message/send", "params": {"message": v03_message}}
    reply = await http.post("/", json=body)
    assert reply.headers["retry-after"] == "5"
    assert_rpc_busy(reply.json(), 7)
    body = {**body, "id": 8, "method": "message/stream"}
    async with http.stream("POST", "/", json=body) as response:
        # 0.3 streams report errors inside the stream.
        assert response.status_code == 200
        events = await sse_events(response)
    assert len(events) == 1
    assert_rpc_busy(events[0], 8)

    assert await metric(http, "molecule_admission_refused_total") == refused_before + 7
    assert len(await tasks_in(http, ctx)) == 5
    assert await slots(http) == (2, 3)
    assert not gate.started(extra)

    # Released, every accepted task runs and completes with its own answer.
    gate.release(*names)
    streamed = await asyncio.wait_for(asyncio.gather(*running, queued_stream), 60)
    assert [state(first_task(e)) for e in streamed] == [
        "TASK_STATE_WORKING",
        "TASK_STATE_WORKING",
        "TASK_STATE_SUBMITTED",
    ]
    for events in streamed:
        assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    for task in await tasks_in(http, ctx):
        task = await wait_state(http, task["id"], "TASK_STATE_COMPLETED")
        name = task["history"][0]["parts"][0]["text"]
        assert text_of(task) == f"done {name}"
    assert all(gate.started(n) for n in names)
    await wait_slots(http, 0, 0)


async def test_a_canceled_waiting_task_never_runs(
    limited: ServerProcess, http: httpx.AsyncClient
) -> None:
    gate = Gate(limited)
    run = [f"cr{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    wait = [f"cw{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    for name in run:
        assert state(await rest_send(http, name)) == "TASK_STATE_WORKING"
    await gate.wait_started(*run)
    by_rest = await rest_send(http, wait[0])
    by_rpc = await rpc_send(http, wait[1])
    streamed = asyncio.create_task(stream(http, "rest", wait[2]))
    await wait_slots(http, 2, 3)
    found: list[dict[str, Any]] = []

    async def stream_task_stored() -> bool:
        params = {"status": "TASK_STATE_SUBMITTED"}
        listed = (await http.get("/rest/tasks", headers=A2A, params=params)).json()["tasks"]
        found[:] = [t for t in listed if t["history"][0]["parts"][0]["text"] == wait[2]]
        return bool(found)

    await eventually(stream_task_stored)
    [stream_task] = found

    reply = await http.post(f"/rest/tasks/{by_rest['id']}:cancel", headers=A2A)
    assert reply.status_code == 200, reply.text
    assert state(reply.json()) == "TASK_STATE_CANCELED"
    reply = await http.post(
        "/", json=rpc_body("CancelTask", {"id": by_rpc["id"]}), headers=A2A
    )
    assert state(reply.json()["result"]) == "TASK_STATE_CANCELED"
    reply = await http.post(f"/rest/tasks/{stream_task['id']}:cancel", headers=A2A)
    assert state(reply.json()) == "TASK_STATE_CANCELED"
    # The stream of a canceled waiting task ends with the canceled state.
    events = await asyncio.wait_for(streamed, 20)
    assert state(first_task(events)) == "TASK_STATE_SUBMITTED"
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"
    # Their places in line are free again.
    await wait_slots(http, 2, 0)

    gate.release(*run, *wait)
    for task in (by_rest, by_rpc, stream_task):
        assert state(await get_task(http, task["id"])) == "TASK_STATE_CANCELED"
    await wait_slots(http, 0, 0)
    # A new task runs at once; the canceled ones still never ran.
    after = f"ca-{uuid.uuid4().hex[:6]}"
    gate.release(after)
    done = await stream(http, "rest", after)
    assert done[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    await asyncio.sleep(0.3)
    assert not any(gate.started(n) for n in wait)
    for task in (by_rest, by_rpc, stream_task):
        task = await get_task(http, task["id"])
        assert state(task) == "TASK_STATE_CANCELED"
        assert text_of(task) == ""


async def test_an_answer_to_a_question_waits_for_a_slot_too(
    limited: ServerProcess, http: httpx.AsyncClient
) -> None:
    """The answer to an input-required task needs a slot; the question itself holds none."""
    gate = Gate(limited)
    asked = await rest_send(http, "ask")
    asked = await wait_state(http, asked["id"], "TASK_STATE_INPUT_REQUIRED")
    await wait_slots(http, 0, 0)
    run = [f"ir{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    for name in run:
        await rest_send(http, name)
    await gate.wait_started(*run)
    answer = f"ia-{uuid.uuid4().hex[:6]}"
    # A blocking SendMessage: it returns when the answered turn is done.
    answered = asyncio.create_task(
        http.post(
            "/rest/message:send",
            json=send_params(answer, now=False, task_id=asked["id"], context_id=asked["contextId"]),
            headers=A2A,
        )
    )
    await wait_slots(http, 2, 1)
    assert state(await get_task(http, asked["id"])) == "TASK_STATE_INPUT_REQUIRED"
    assert not gate.started(answer)
    more = [f"iq{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    for name in more:
        assert state(await rest_send(http, name)) == "TASK_STATE_SUBMITTED"
    await wait_slots(http, 2, 3)
    assert_rest_busy(await http.post("/rest/message:send", json=send_params("late"), headers=A2A))

    gate.release(*run, answer, *more)
    reply = await asyncio.wait_for(answered, 30)
    assert reply.status_code == 200, reply.text
    task = reply.json()["task"]
    assert state(task) == "TASK_STATE_COMPLETED"
    assert text_of(task) == f"done {answer}"
    await wait_slots(http, 0, 0)


# ---- durable mode -----------------------------------------------------------


@pytest.mark.temporal
async def test_durable_task_waits_submitted_before_its_workflow_starts(
    temporal_server, tmp_path: Path
) -> None:
    queue = f"adm-{uuid.uuid4().hex[:8]}"
    env = {
        **LIMITS,
        "MOLECULE_MAX_RUNNING_TASKS": "1",
        "MOLECULE_MAX_QUEUED_TASKS": "1",
        "TEMPORAL_HOST": temporal_server.address,
        "TEMPORAL_TASK_QUEUE": queue,
        "WORKSPACE_ID": queue,
        "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
    }
    server = ServerProcess(tmp_path, env).start()
    temporal = await TemporalClient.connect(temporal_server.address)
    try:
        gate = Gate(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            assert (await http.get("/readyz")).json()["mode"] == "durable"
            first, second = f"d1-{uuid.uuid4().hex[:6]}", f"d2-{uuid.uuid4().hex[:6]}"
            running = await rest_send(http, first)
            await gate.wait_started(first)
            waiting = await rpc_send(http, second)
            assert state(waiting) == "TASK_STATE_SUBMITTED"
            await wait_slots(http, 1, 1)
            assert state(await get_task(http, waiting["id"])) == "TASK_STATE_SUBMITTED"
            # Waiting happens before the workflow starts: Temporal has none for it yet.
            with pytest.raises(RPCError) as missing:
                await temporal.get_workflow_handle(f"molecule:{queue}:{waiting['id']}").describe()
            assert missing.value.status == RPCStatusCode.NOT_FOUND
            assert_rest_busy_durable(
                await http.post("/rest/message:send", json=send_params("third"), headers=A2A)
            )

            gate.release(first, second)
            for task_id, name in ((running["id"], first), (waiting["id"], second)):
                task = await wait_state(http, task_id, "TASK_STATE_COMPLETED")
                assert text_of(task) == f"done {name}"
                handle = temporal.get_workflow_handle(f"molecule:{queue}:{task_id}")
                # The task's final state is stored before its workflow closes.
                await asyncio.wait_for(handle.result(), 30)
                assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
            await wait_slots(http, 0, 0)
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["direct", pytest.param("durable", marks=pytest.mark.temporal)])
async def test_a_task_still_waiting_at_shutdown_is_settled_by_the_restarted_process(
    mode: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Durable: its workflow is started at start-up and it completes. Direct: it is
    failed at start-up like any direct task the process did not finish."""
    env = {
        **LIMITS,
        "MOLECULE_MAX_RUNNING_TASKS": "1",
        "MOLECULE_MAX_QUEUED_TASKS": "1",
        "MOLECULE_SHUTDOWN_GRACE": "1",
    }
    if mode == "durable":
        temporal_server = request.getfixturevalue("temporal_server")
        queue = f"adm-{uuid.uuid4().hex[:8]}"
        env.update(
            TEMPORAL_HOST=temporal_server.address,
            TEMPORAL_TASK_QUEUE=queue,
            WORKSPACE_ID=queue,
            TEMPORAL_HEARTBEAT_TIMEOUT="2",
        )
    server = ServerProcess(tmp_path, env).start()
    gate = Gate(server)
    try:
        first, second = f"s1-{uuid.uuid4().hex[:6]}", f"s2-{uuid.uuid4().hex[:6]}"
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            await rest_send(http, first)
            await gate.wait_started(first)
            waiting = await rest_send(http, second)
            assert state(waiting) == "TASK_STATE_SUBMITTED"
        server.stop()  # SIGTERM while `second` waits
        assert not gate.started(second)
        gate.release(first, second)
        server = ServerProcess(tmp_path, env, port=server.port).start()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            if mode == "durable":
                task = await wait_state(http, waiting["id"], "TASK_STATE_COMPLETED")
                assert text_of(task) == f"done {second}"
            else:
                task = await wait_state(http, waiting["id"], "TASK_STATE_FAILED")
                assert "The server stopped" in task["status"]["message"]["parts"][0]["text"]
                assert not gate.started(second)
    finally:
        server.stop()


def assert_rest_busy_durable(reply: httpx.Response) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "5"
    assert reply.json()["error"]["message"].startswith(
        "Server busy: 1 of 1 running slots and 1 of 1 places in line are taken"
    )


# ---- the admission logic itself ------------------------------------------------


async def test_slots_are_granted_in_arrival_order_and_the_line_is_bounded() -> None:
    admission = Admission(1, 2)
    contexts = [ServerCallContext() for _ in range(3)]
    tickets = [admission.admit(c) for c in contexts]
    with pytest.raises(ServerBusyError):
        admission.admit(ServerCallContext())
    claimed = [claim(t) for t in tickets]
    assert claimed == tickets
    assert tickets[0].try_start() and not tickets[1].try_start()
    order: list[int] = []

    async def run(i: int) -> None:
        await tickets[i].start()
        order.append(i)

    waiters = [asyncio.create_task(run(i)) for i in (2, 1)]  # 2 asks first
    await asyncio.sleep(0)
    assert (admission.running, admission.queued) == (1, 2)
    tickets[0].release()
    tickets[0].release()  # idempotent
    await asyncio.sleep(0)
    assert order == [2] and (admission.running, admission.queued) == (1, 1)
    # A newcomer does not overtake the line.
    late = admission.admit(ServerCallContext())
    assert not late.try_start()
    tickets[2].release()
    await asyncio.gather(*waiters)
    assert order == [2, 1]
    for ticket in (tickets[1], late):
        ticket.release()
    assert (admission.running, admission.queued) == (0, 0)


async def test_a_held_follow_up_counts_for_its_principal_but_takes_no_place_in_line() -> None:
    admission = Admission(1, 1, max_per_principal=3)
    holder = admission.admit(ServerCallContext())
    assert holder.try_start()
    hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    context = ServerCallContext()
    held = admission.admit(context, hold)
    claim(held)
    assert admission.queued == 0
    # Another client still finds the place in line; the principal's count includes it.
    other = admission.admit(ServerCallContext())
    with pytest.raises(PrincipalTasksError):
        admission.admit(ServerCallContext())
    assert not held.try_start()
    starting = asyncio.create_task(held.start())
    hold.set_result(None)
    await asyncio.sleep(0)
    assert admission.queued == 2  # joined the line, past the bound: it was accepted
    holder.release()
    other.release()
    await asyncio.wait_for(starting, 1)
    held.release()
    assert (admission.running, admission.queued) == (0, 0)
    # Given back while still held: nothing is counted twice.
    hold = asyncio.get_running_loop().create_future()
    waiting = admission.admit(ServerCallContext(), hold)
    waiting.release()
    hold.set_result(None)
    assert (admission.running, admission.queued) == (0, 0)


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    admission = Admission(1, 1)
    holder = admission.admit(ServerCallContext())
    assert holder.try_start()
    context = ServerCallContext()
    waiting = admission.admit(context)
    claim(waiting)
    waiter = asyncio.create_task(waiting.start())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    waiting.release()
    assert (admission.running, admission.queued) == (1, 0)
    holder.release()
    assert (admission.running, admission.queued) == (0, 0)


async def test_handler_gives_back_an_unclaimed_ticket_and_a_late_claim_is_not_refused() -> None:
    admission = Admission(1, 0)
    context = ServerCallContext()
    ticket = admission.admit(context)
    ticket.release_unclaimed()  # e.g. the client left before the task ran
    assert admission.queued == 0
    other = admission.admit(ServerCallContext())  # the line is full again
    assert other.try_start()
    late = claim(ticket)  # the accepted message still runs, past the bound
    assert late is not None and late is not ticket
    assert (admission.running, admission.queued) == (1, 1)
    other.release()
    await late.start()
    late.release()
    assert (admission.running, admission.queued) == (0, 0)


def test_zero_means_no_limit() -> None:
    admission = Admission(0, 0)
    tickets = [admission.admit(ServerCallContext()) for _ in range(50)]
    assert all(t.try_start() for t in tickets)
    assert admission.running == 50


# ---- the SDK behaviour server/busy.py relies on ---------------------------------


class _Refusing(DefaultRequestHandler):
    async def on_message_send(self, params, context):  # type: ignore[no-untyped-def]
        raise ServerBusyError(Admission(2, 3))

    async def on_message_send_stream(self, params, context):  # type: ignore[no-untyped-def]
        raise ServerBusyError(Admission(2, 3))
        yield  # an async generator, like the real one


class _NoExecutor(AgentExecutor):
    async def execute(self, context, event_queue):  # type: ignore[no-untyped-def]
        raise AssertionError("never called")

    async def cancel(self, context, event_queue):  # type: ignore[no-untyped-def]
        raise AssertionError("never called")


async def test_sdk_has_no_status_or_header_for_our_error_and_raises_it_before_streaming() -> None:
    """Pins what server/busy.py works around and relies on. If an a2a-sdk upgrade
    maps custom errors (status, headers), busy.py may become unnecessary; if
    it stops fetching a stream's first event before answering, 1.0 refusals
    would arrive inside an SSE stream and busy.py must change."""
    card = AgentCard(name="t", capabilities=AgentCapabilities(streaming=True))
    handler = _Refusing(agent_executor=_NoExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(
        routes=[
            *create_rest_routes(handler, path_prefix="/rest"),
            *create_jsonrpc_routes(handler, rpc_url="/"),
        ]
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://sdk") as http:
        for path in ("/rest/message:send", "/rest/message:stream"):
            reply = await http.post(path, json=send_params("x"), headers=A2A)
            assert reply.status_code == 500, reply.text
            assert reply.json()["error"]["status"] == "INTERNAL"
            assert "retry-after" not in reply.headers
            assert reply.json()["error"]["message"].startswith("Server busy")
        for method in ("SendMessage", "SendStreamingMessage"):
            reply = await http.post("/", json=rpc_body(method, send_params("x")), headers=A2A)
            assert reply.headers["content-type"].startswith("application/json")  # not SSE
            assert reply.json()["error"]["code"] == -32603
            assert reply.json()["error"]["message"].startswith("Server busy")

"""Done and Reject in durable mode (real Temporal dev server, real HTTP): the adapter's
own end is the workflow's outcome, stored by task_complete with its message, and a
retried llm_call never runs a task that already has a final state again."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    Message,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
)
from google.protobuf.struct_pb2 import Struct
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from molecule_runtime.durable.types import TaskOutcome
from molecule_runtime.durable.workflow import ADAPTER_ENDS_PATCH, AgentTaskWorkflow
from molecule_runtime.execution.headless import headless_events
from molecule_runtime.store.factory import open_stores
from tests.fixtures.scripted_adapter import read_records
from tests.fixtures.turns_adapter import DONE_MESSAGE, REJECT_REASON, runs
from tests.support.a2a import BackgroundStream, make_client, stream_events, user_message
from tests.support.durable import durable_env, scripted_message

pytestmark = pytest.mark.temporal

TURNS_ADAPTER = Path(__file__).resolve().parent / "fixtures" / "turns_adapter.py"
QUESTION = "Which one?"
HISTORY_FIXTURES = Path(__file__).parent / "fixtures" / "histories"


def ending_env(temporal_address: str, records: Path, **extra: str) -> dict[str, str]:
    env = durable_env(temporal_address, records, **extra)
    env["ADAPTER_MODULE"] = str(TURNS_ADAPTER)
    return env


def ending_message(text: str, end: str, *, task: Task | None = None) -> Message:
    message = user_message(text)
    if task is not None:
        message.task_id, message.context_id = task.id, task.context_id
    meta = Struct()
    # One chunk of the text, then the end: a question, Done, or a Reject before any text.
    meta.update({"chunks": 1, **({"ask": QUESTION} if end == "ask" else {"end": end})})
    message.metadata.CopyFrom(meta)
    return message


def final_status(events: list[StreamResponse]) -> TaskStatus:
    last = events[-1]
    return last.task.status if last.HasField("task") else last.status_update.status


def status_text(task: Task) -> str:
    return "".join(p.text for p in task.status.message.parts)


async def workflow_outcome(address: str, env: dict[str, str], task_id: str) -> TaskOutcome:
    client = await Client.connect(address)
    handle = client.get_workflow_handle(
        f"molecule:{env['WORKSPACE_ID']}:{task_id}", result_type=TaskOutcome
    )
    return await asyncio.wait_for(handle.result(), timeout=40)


async def replayed_history(
    address: str, env: dict[str, str], task_id: str, fixture: str
) -> WorkflowHistory:
    """The workflow's history, replayed against today's code; saved as a replay
    fixture with MOLECULE_RECORD_HISTORIES=1."""
    client = await Client.connect(address)
    history = await client.get_workflow_handle(
        f"molecule:{env['WORKSPACE_ID']}:{task_id}"
    ).fetch_history()
    await Replayer(workflows=[AgentTaskWorkflow]).replay_workflow(history)
    if os.environ.get("MOLECULE_RECORD_HISTORIES") == "1":
        (HISTORY_FIXTURES / f"{fixture}.json").write_text(history.to_json())
    return history


def patches(history: WorkflowHistory) -> list[str]:
    ids = []
    for event in history.events:
        if event.HasField("marker_recorded_event_attributes"):
            attrs = event.marker_recorded_event_attributes
            if attrs.marker_name == "core_patch":
                ids.append(json.loads(attrs.details["patch-data"].payloads[0].data)["id"])
    return ids


async def test_reject_and_done_are_the_workflows_outcome(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = ending_env(temporal_server.address, records)
    server = server_factory(env)
    client = await make_client(server.url)
    try:
        rejected = [e async for e in stream_events(client, ending_message("go", "reject"))]
        task_id = rejected[0].task.id
        last = rejected[-1].status_update.status
        assert last.state == TaskState.TASK_STATE_REJECTED, rejected
        assert "".join(p.text for p in last.message.parts) == REJECT_REASON
        stored = await client.get_task(GetTaskRequest(id=task_id))
        assert stored.status.state == TaskState.TASK_STATE_REJECTED
        assert status_text(stored) == REJECT_REASON
        outcome = await workflow_outcome(temporal_server.address, env, task_id)
        assert (outcome.state, outcome.message) == ("rejected", REJECT_REASON)
        history = await replayed_history(temporal_server.address, env, task_id, "rejected")
        assert patches(history) == ["payloads-by-reference", ADAPTER_ENDS_PATCH]

        done = [e async for e in stream_events(client, ending_message("work", "done"))]
        task_id = done[0].task.id
        stored = await client.get_task(GetTaskRequest(id=task_id))
        assert stored.status.state == TaskState.TASK_STATE_COMPLETED
        assert status_text(stored) == DONE_MESSAGE
        assert "".join(p.text for p in stored.artifacts[0].parts) == "work-0 "
        outcome = await workflow_outcome(temporal_server.address, env, task_id)
        assert (outcome.state, outcome.message) == ("completed", DONE_MESSAGE)
        await replayed_history(temporal_server.address, env, task_id, "done")
        assert [r["attempt"] for r in runs(records, task_id)] == [1]
    finally:
        await client.close()


async def test_an_end_stored_by_another_replica_reaches_the_stream(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    """The workflow stays on the replica that started it, so its task_complete stores
    the end there; the answer's stream on the other replica ends with the same state
    and message, from the workflow's outcome."""
    records = tmp_path / "records"
    (tmp_path / "shared").mkdir()
    store = f"sqlite+aiosqlite:///{tmp_path / 'shared' / 'tasks.db'}"
    env = ending_env(temporal_server.address, records, TASK_STORE_URL=store)
    a = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-a"})
    b = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-b"})
    client_a, client_b = await make_client(a.url), await make_client(b.url)
    try:
        for end, state, text in (
            ("reject", TaskState.TASK_STATE_REJECTED, REJECT_REASON),
            ("done", TaskState.TASK_STATE_COMPLETED, DONE_MESSAGE),
        ):
            first = [e async for e in stream_events(client_a, ending_message("t1", "ask"))]
            task = first[0].task
            assert first[-1].status_update.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
            assert first[-1].status_update.status.message.parts[0].text == QUESTION
            answer = [e async for e in stream_events(client_b, ending_message("t2", end, task=task))]
            last = final_status(answer)
            assert last.state == state, [(e.WhichOneof("payload"), final_status([e]).state) for e in answer]
            assert "".join(p.text for p in last.message.parts) == text, answer
            for client in (client_a, client_b):
                stored = await client.get_task(GetTaskRequest(id=task.id))
                assert (stored.status.state, status_text(stored)) == (state, text)
            outcome = await workflow_outcome(temporal_server.address, env, task.id)
            assert outcome.message == text
    finally:
        await client_a.close()
        await client_b.close()


async def _store_final_state(store_url: str, task_id: str, context_id: str, text: str) -> None:
    """Store the task's final state as an earlier attempt did (older versions stored
    Done inside llm_call) from outside the server."""
    stores = await open_stores(store_url)
    try:
        events = headless_events(stores.tasks, task_id, context_id)
        await events.status(TaskState.TASK_STATE_COMPLETED, text)
        await events.persisted()
    finally:
        await stores.aclose()


async def test_a_retry_of_a_task_already_finished_does_not_run_it_again(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    """The process dies during llm_call after the task's final state was stored;
    Temporal retries llm_call on the restarted process: the adapter is not run again,
    the stored state and message stay, and the workflow ends with them."""
    records = tmp_path / "records"
    workdir = tmp_path / "crash"
    env = durable_env(temporal_server.address, records)
    server = server_factory(env, workdir=workdir)
    client = await make_client(server.url)
    try:
        stream = BackgroundStream(client, scripted_message(chunks=200, delay=0.05), may_break=True)
        await stream.wait_chunks(3, timeout=20)
        server.kill()
        await stream.finish(10)
    finally:
        await client.close()
    task_id, context_id = stream.task_id, stream.events[0].task.context_id
    store_url = f"sqlite+aiosqlite:///{workdir / 'data' / 'tasks.db'}"
    await _store_final_state(store_url, task_id, context_id, "Finished before the crash.")

    restarted = server_factory(env, workdir=workdir, port=server.port)
    outcome = await workflow_outcome(temporal_server.address, env, task_id)
    assert (outcome.state, outcome.message) == ("completed", "Finished before the crash.")
    starts = [r for r in read_records(records, task_id) if r["event"] == "start"]
    assert [r["attempt"] for r in starts] == [1], starts
    client = await make_client(restarted.url)
    try:
        stored = await client.get_task(GetTaskRequest(id=task_id))
    finally:
        await client.close()
    assert stored.status.state == TaskState.TASK_STATE_COMPLETED
    assert status_text(stored) == "Finished before the crash."
    assert "not run, the task is already completed" in restarted.log_path.read_text()


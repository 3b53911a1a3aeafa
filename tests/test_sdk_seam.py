"""Pins the a2a-sdk behaviour molecule_runtime relies on where the SDK has no public
seam (molecule_runtime/sdk_seam.py, and the store's row format and compaction). An SDK
upgrade that changes one of these fails here first."""

from __future__ import annotations

import asyncio
import logging
import warnings
from datetime import UTC, datetime

import pytest
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.agent_execution.active_task import ActiveTask
from a2a.server.cluster import LegacyTaskStoreAdapter, TaskVersion, VersionedDatabaseTaskStore
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue_v2 import EventQueueSource
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore
from a2a.server.tasks.task_manager import TaskManager
from a2a.types.a2a_pb2 import (
    AgentCard,
    Artifact,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
)
from google.protobuf.struct_pb2 import Value
from sqlalchemy.ext.asyncio import create_async_engine

from molecule_runtime.sdk_seam import (
    answer_taken,
    events_taken,
    expect_snapshot_relay,
    memory_tasks,
    runs_here,
    single_process_note_silenced,
    version_number,
)
from molecule_runtime.server.executor import RuntimeExecutor
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.owners import acting_for
from molecule_runtime.store.task_writes import task_row


async def test_the_memory_store_keeps_its_tasks_by_owner_then_id() -> None:
    store = InMemoryTaskStore()
    for owner, task_id in (("alice", "t1"), ("alice", "t2"), ("bob", "t3")):
        task = Task(id=task_id, context_id="c", status=TaskStatus(state=TaskState.TASK_STATE_WORKING))
        await store.save(task, acting_for(owner))
    tasks = memory_tasks(store)
    assert {owner: sorted(by_id) for owner, by_id in tasks.items()} == {"alice": ["t1", "t2"], "bob": ["t3"]}
    assert tasks["bob"]["t3"].status.state == TaskState.TASK_STATE_WORKING


def test_versions_are_integers_and_missing_is_zero() -> None:
    assert version_number(TaskVersion(7)) == 7
    assert version_number(TaskVersion.MISSING) == 0


async def test_the_event_queue_counts_an_event_taken_once_its_consumer_is_done() -> None:
    queue = EventQueueSource()
    await queue.enqueue_event(Message(message_id="m", role=Role.ROLE_AGENT))
    taken = asyncio.create_task(events_taken(queue))
    await asyncio.sleep(0.05)
    assert not taken.done()  # enqueued, not consumed
    await queue.dequeue_event()
    await asyncio.sleep(0.05)
    assert not taken.done()  # dequeued, not yet done
    queue.task_done()
    await asyncio.wait_for(taken, 2)
    await queue.close(immediate=True)
    await asyncio.wait_for(events_taken(queue), 2)  # a closed queue takes nothing more


def _handler(**kwargs: object) -> DefaultRequestHandler:
    store = ObservedTaskStore(LegacyTaskStoreAdapter(InMemoryTaskStore()))
    return DefaultRequestHandler(
        agent_executor=RuntimeExecutor.__new__(RuntimeExecutor),
        task_store=store,
        agent_card=AgentCard(name="t"),
        **kwargs,
    )


def test_the_single_process_note_is_what_is_silenced(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _handler()
    noted = [r.getMessage() for r in caplog.records] + [str(w.message) for w in seen]
    assert any("without an event_stream" in text for text in noted), noted
    caplog.clear()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with single_process_note_silenced():
            _handler()
    noted = [r.getMessage() for r in caplog.records] + [str(w.message) for w in seen]
    assert not any("without an event_stream" in text for text in noted), noted


async def test_the_handler_knows_which_tasks_run_here() -> None:
    with single_process_note_silenced():
        handler = _handler()
    assert await runs_here(handler, "no-such-task") is False


async def test_the_task_manager_saves_its_own_task_object_so_compaction_sticks() -> None:
    store = ObservedTaskStore(LegacyTaskStoreAdapter(InMemoryTaskStore()))
    saved: list[Task] = []
    store.observe(lambda _id, _event, _version: None)
    inner_save = store.inner.save

    async def spy(task: Task, **kwargs: object) -> TaskVersion:
        saved.append(task)
        return await inner_save(task, **kwargs)  # type: ignore[arg-type]

    store.inner.save = spy  # type: ignore[method-assign]
    manager = TaskManager(store, ServerCallContext(), "t1", "c1", None)
    await manager.process(Task(id="t1", context_id="c1", status=TaskStatus(state=TaskState.TASK_STATE_WORKING)))
    for i, append in enumerate((False, True, True)):
        await manager.process(
            TaskArtifactUpdateEvent(
                task_id="t1",
                context_id="c1",
                artifact=Artifact(artifact_id="a", parts=[Part(text=f"p{i}")]),
                append=append,
            )
        )
    assert saved[1] is saved[2] is saved[3]  # one object, updated in place
    assert [p.text for p in saved[3].artifacts[0].parts] == ["p0p1p2"]


async def test_task_rows_are_written_as_the_sdk_writes_them(tmp_path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    try:
        database = VersionedDatabaseTaskStore(engine)
        task = Task(id="t1", context_id="c1", status=TaskStatus(state=TaskState.TASK_STATE_COMPLETED))
        task.status.timestamp.FromDatetime(datetime.now(UTC))
        task.history.append(Message(message_id="m", role=Role.ROLE_USER, parts=[Part(text="hi")]))
        task.artifacts.append(Artifact(artifact_id="a", parts=[Part(text="answer")]))
        task.metadata.update({"k": "v"})
        sdk = database.as_task_store._to_orm(task, "owner")  # type: ignore[attr-defined]
        ours = task_row(task, "owner")
        for column in ("id", "context_id", "kind", "owner", "last_updated", "status", "artifacts", "history", "protocol_version"):
            assert ours[column] == getattr(sdk, column), column
        assert ours["metadata"] == sdk.task_metadata
    finally:
        await engine.dispose()


async def test_a_task_snapshot_of_an_existing_task_is_streamed_not_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`TaskEvents.relay` relies on it: a question another process stored reaches this
    process's stream without a second write (and without an error in the log)."""
    question = Message(message_id="q", role=Role.ROLE_AGENT, parts=[Part(text="q?")])

    class Relaying(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: object) -> None:
            working = TaskStatus(state=TaskState.TASK_STATE_WORKING)
            asking = TaskStatus(state=TaskState.TASK_STATE_INPUT_REQUIRED, message=question)
            await event_queue.enqueue_event(Task(id="t", context_id="c", status=working))  # type: ignore[attr-defined]
            expect_snapshot_relay("t")
            await event_queue.enqueue_event(Task(id="t", context_id="c", status=asking))  # type: ignore[attr-defined]

        async def cancel(self, context: RequestContext, event_queue: object) -> None:
            return None

    store = InMemoryTaskStore()
    call = ServerCallContext()
    active = ActiveTask(Relaying(), "t", TaskManager(store, call, "t", "c", None))
    await active.start(call, create_task_if_missing=True)
    with caplog.at_level(logging.ERROR):
        streamed = [
            event
            async for event in active.subscribe(request=RequestContext(call, task_id="t", context_id="c"))
        ]
    assert [e.status.state for e in streamed] == [
        TaskState.TASK_STATE_WORKING,
        TaskState.TASK_STATE_INPUT_REQUIRED,
    ]
    stored = await store.get("t", call)
    assert stored is not None and stored.status.state == TaskState.TASK_STATE_WORKING
    assert not [r for r in caplog.records if "Ignoring task replacement" in r.getMessage()]


class _HeldExecutor(AgentExecutor):
    """Holds each request until `go` is set, without writing anything."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def execute(self, context: RequestContext, event_queue: EventQueueSource) -> None:
        await self.go.wait()
        await event_queue.enqueue_event(
            Task(
                id=str(context.task_id),
                context_id=str(context.context_id),
                status=TaskStatus(state=TaskState.TASK_STATE_COMPLETED),
            )
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueueSource) -> None:
        self.go.set()


async def test_a_message_taken_here_is_seen_before_anything_is_stored() -> None:
    executor = _HeldExecutor()
    store = ObservedTaskStore(LegacyTaskStoreAdapter(InMemoryTaskStore()))
    with single_process_note_silenced():
        handler = DefaultRequestHandler(
            agent_executor=executor, task_store=store, agent_card=AgentCard(name="t")
        )
    message = Message(role=Role.ROLE_USER, message_id="m1", task_id="", parts=[Part(text="x")])
    context = ServerCallContext()
    sending = asyncio.create_task(handler.on_message_send(SendMessageRequest(message=message), context))
    task_id = ""
    for _ in range(200):
        # Producers of other tests' handlers may still be around: ask this handler about each.
        ids = [t.get_name().split(":", 1)[1] for t in asyncio.all_tasks() if t.get_name().startswith("producer:")]
        taken = [i for i in ids if await answer_taken(handler, i)]
        if taken:
            task_id = taken[0]
            break
        await asyncio.sleep(0.01)
    assert task_id, "the held message is not seen as taken"
    assert await store.get(task_id, context) is None  # nothing stored yet
    executor.go.set()
    result = await asyncio.wait_for(sending, 5)
    assert isinstance(result, Task) and result.status.state == TaskState.TASK_STATE_COMPLETED
    for _ in range(200):
        if not await answer_taken(handler, task_id):
            break
        await asyncio.sleep(0.01)
    assert await answer_taken(handler, task_id) is False
    await handler.aclose()


def test_task_rows_reuse_unchanged_parts_and_match_the_sdk_conversion() -> None:
    """A row is written at every commit while a task streams; the parts that did not
    change are reused, the streamed artifact is converted directly, and the result
    is what MessageToDict gives (what the SDK reads back)."""
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.struct_pb2 import Struct

    data = Struct()
    data.update({"n": 1})
    task = Task(id="t1", context_id="c1", status=TaskStatus(state=TaskState.TASK_STATE_WORKING))
    task.history.append(Message(message_id="m", role=Role.ROLE_USER, parts=[Part(text="hi")]))
    task.artifacts.append(Artifact(artifact_id="a", name="answer", parts=[Part(text="ans")]))
    task.artifacts.append(Artifact(artifact_id="b", description="d", parts=[Part(text="x"), Part(text="")]))
    task.artifacts.append(Artifact(artifact_id="c", parts=[Part(data=Value(struct_value=data))]))
    task.artifacts.append(Artifact(artifact_id="e", parts=[Part(text="t", media_type="text/csv")]))
    task.artifacts.append(Artifact(artifact_id="f"))
    task.metadata.update({"k": "v"})

    def expected() -> dict[str, object]:
        return {
            "status": MessageToDict(task.status),
            "artifacts": [MessageToDict(a) for a in task.artifacts],
            "history": [MessageToDict(m) for m in task.history],
            "metadata": MessageToDict(task.metadata),
        }

    cache: dict = {}
    first = task_row(task, "o", cache)
    assert {k: first[k] for k in expected()} == expected()
    task.artifacts[0].parts[0].text += " more"
    second = task_row(task, "o", cache)
    assert {k: second[k] for k in expected()} == expected()
    assert second["history"][0] is first["history"][0]  # unchanged: reused
    assert second["artifacts"][0] is not first["artifacts"][0]
    task.history[0].parts[0].text = "changed"
    assert task_row(task, "o", cache)["history"] == expected()["history"]


def test_dispatcher_note_at_shutdown_is_the_sdks_and_is_demoted_to_debug(caplog) -> None:
    """The SDK logs this WARNING when a queue closes after its dispatcher stopped
    (every task's queue at shutdown); the seam logs it at DEBUG."""
    import inspect
    import logging

    from a2a.server.events import event_queue_v2

    from molecule_runtime import sdk_seam

    assert sdk_seam._DISPATCHER_NOTE in inspect.getsource(event_queue_v2)
    queue_log = logging.getLogger("a2a.server.events.event_queue_v2")
    with caplog.at_level(logging.INFO):
        queue_log.warning("Dispatcher task is not running. Cannot wait for event dispatch.")
        queue_log.warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]


async def test_closed_queue_notes_are_demoted_only_once_the_process_shuts_down(caplog) -> None:
    """The SDK's own WARNINGs about an event put on a closed queue: kept while the
    process serves (they would mean a lost event), DEBUG once it hands its tasks over."""
    import logging

    from a2a.server.events.event_queue_v2 import EventQueueSource
    from a2a.types.a2a_pb2 import TaskState, TaskStatus, TaskStatusUpdateEvent

    from molecule_runtime import sdk_seam

    event = TaskStatusUpdateEvent(
        task_id="t", context_id="c", status=TaskStatus(state=TaskState.TASK_STATE_WORKING)
    )

    async def enqueue_on_a_closed_queue() -> list[str]:
        queue = EventQueueSource()
        await queue.close(immediate=True)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="a2a.server.events.event_queue_v2"):
            await queue.enqueue_event(event)
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]

    assert any(m.startswith("Queue was closed during enqueuing") for m in await enqueue_on_a_closed_queue())
    sdk_seam.queues_torn_down()
    try:
        assert await enqueue_on_a_closed_queue() == []
    finally:
        sdk_seam._QUEUE_NOTES.shutting_down = False


def test_the_sdk_consumer_reloads_once_and_the_seam_retries_until_the_write_lands() -> None:
    import inspect

    from a2a.server.agent_execution.active_task import EventConsumer

    from molecule_runtime import sdk_seam

    assert EventConsumer._process_event is sdk_seam._process_event_until_landed
    # The SDK's own handling the seam wraps: one reload, then the write again, and a
    # second conflict raises (it would fail the client's stream).
    source = inspect.getsource(sdk_seam._sdk_process_event)
    assert "except ConcurrentTaskModificationError" in source and "invalidate()" in source
    assert source.count("_process_event_inner(event)") == 2


async def test_a_write_that_conflicts_again_is_retried_and_one_that_never_lands_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from a2a.server.cluster.task_store import ConcurrentTaskModificationError

    from molecule_runtime import sdk_seam

    calls: list[object] = []

    async def conflicting(times: int):
        async def process(consumer: object, event: object) -> None:
            calls.append(event)
            if len(calls) <= times:
                raise ConcurrentTaskModificationError("t")

        return process

    monkeypatch.setattr(sdk_seam, "_sdk_process_event", await conflicting(3))
    await sdk_seam._process_event_until_landed(object(), "e")  # type: ignore[arg-type]
    assert len(calls) == 4
    calls.clear()
    monkeypatch.setattr(sdk_seam, "CONFLICT_RETRIES", 3)
    monkeypatch.setattr(sdk_seam, "_sdk_process_event", await conflicting(99))
    with pytest.raises(ConcurrentTaskModificationError):
        await sdk_seam._process_event_until_landed(object(), "e")  # type: ignore[arg-type]
    assert len(calls) == 3

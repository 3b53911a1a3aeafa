"""Runs one attempt of an adapter's `stream()` and turns its chunks into artifact events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from a2a.types.a2a_pb2 import Artifact as StoredArtifact
from a2a.types.a2a_pb2 import TaskState

from molecule_runtime.adapters.base import BaseAdapter, InputRequired, TaskInput
from molecule_runtime.adapters.outputs import Done, Reject
from molecule_runtime.execution.artifacts import ArtifactWriter, answer_text
from molecule_runtime.execution.events import TaskEvents, TaskStopped, of_turn
from molecule_runtime.execution.pull import open_stream, pull
from molecule_runtime.execution.steps import AttemptSteps, journaling
from molecule_runtime.execution.usage import AttemptUsage, turn_of_artifact
from molecule_runtime.store.steps_table import StoredTurn
from molecule_runtime.vocabulary import Meta


def describe_error(exc: BaseException) -> str:
    """An attempt's failure as the client is told it: type and message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class AttemptResult:
    produced: int  # characters streamed
    question: str | None = None  # set when the adapter asked for input
    # Set when the adapter ended the task itself (Done, Reject): the final
    # state, and the status text that goes with it (Done's message, Reject's
    # reason). The caller stores it, as for every other outcome.
    ended: TaskState | None = None
    message: str = ""


async def run_attempt(
    adapter: BaseAdapter,
    task: TaskInput,
    events: TaskEvents,
    *,
    on_chunk: Callable[[], None] | None = None,
    batch_window: float = 0.0,
    write_ahead: bool = False,
    fresh: bool = False,
) -> AttemptResult:
    """Stream one attempt; return what it produced.

    Every artifact has a stable id. A later attempt starts by replacing
    whatever an earlier attempt wrote (`append=False` on its first event to
    each artifact; an earlier attempt's artifact this one does not write is
    emptied), so the finished task holds one execution's output only; unless
    the adapter continues its answer (`continues_partial`) and the store holds
    some of it: then the attempt gets that text as `TaskInput.partial`, the
    answer is kept and its chunks append to it (artifacts.py). Text chunks
    arriving within `batch_window` seconds of the last event are merged (see
    batching.py). `write_ahead` (durable attempts): a continuing adapter's
    chunks reach clients only once stored, so a continuation never repeats
    text a client saw (store/steps.py). When the adapter ends with `Done` or
    `Reject`, the result names that final state; storing it is the caller's
    final stage (in durable mode a retried attempt must not have stored it already).
    `fresh`: no attempt of this turn can have run before (a direct turn, a new
    durable task's early first attempt), so its journal is not read.
    """
    writer = ArtifactWriter(events, batch_window)
    # The turn's durable state: steps earlier attempts recorded (replayed, not
    # run) and, on a retry, the answer they streamed and stored.
    turn = StoredTurn([]) if fresh else await _stored_turn(events, task, adapter.continues_partial)
    continuing = False
    if task.attempt > 1:
        partial = answer_text(turn.artifacts or [], events.artifact_id)
        continuing = adapter.continues_partial and bool(partial)
        if not continuing:
            task = dataclasses.replace(task, partial=partial)
        await events.status(
            TaskState.TASK_STATE_WORKING,
            f"Retrying: attempt {task.attempt} "
            + ("continues the answer." if continuing else "restarts the answer."),
            metadata={Meta.ATTEMPT: task.attempt},
        )
        if continuing:
            # A fence: once this status is committed, a late commit of the
            # attempt before (a replica handing over at SIGTERM) can no longer
            # land (the store's versions moved on), and the answer read after
            # it holds all that attempt ever stored; read before it, a late
            # commit would be continued a second time.
            await events.persisted()
            stored = await _committed_artifacts(events, task)
            task = dataclasses.replace(task, partial=writer.continue_from(stored))
        else:
            await writer.clear_earlier(await events.earlier_artifacts())
    usage = AttemptUsage(events.usage, turn_of_artifact(task.task_id, events.artifact_id), task.attempt)
    steps = (
        AttemptSteps(events.steps, task.task_id, events.artifact_id, turn.steps, task.attempt)
        if events.steps is not None
        else None
    )
    ahead = write_ahead and adapter.continues_partial and events.steps is not None
    if not ahead:
        return await _stream(adapter, task, events, writer, usage, steps, on_chunk, continuing)
    assert events.steps is not None
    events.steps.stream_write_ahead(task.task_id, True)
    try:
        result = await _stream(adapter, task, events, writer, usage, steps, on_chunk, continuing)
    except BaseException:
        # Chunks delivered before the failure may still be on their way to the
        # store: they stay write-ahead until stored (or a bound passes).
        _end_write_ahead_later(events)
        raise
    try:
        # The closing update is sent only once stored, like every chunk.
        await events.persisted()
    finally:
        events.steps.stream_write_ahead(task.task_id, False)
    return result


# How long a failed attempt's last chunks stay write-ahead while they are stored.
WRITE_AHEAD_SETTLE = 30.0
_settling: set[asyncio.Task[None]] = set()


def _end_write_ahead_later(events: TaskEvents) -> None:
    """End write-ahead streaming of an attempt that failed, once what it delivered is stored."""
    steps = events.steps
    assert steps is not None

    async def settle() -> None:
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(WRITE_AHEAD_SETTLE):
                    await events.persisted()
        finally:
            steps.stream_write_ahead(events.task_id, False)

    settling = asyncio.get_running_loop().create_task(settle(), name=f"write-ahead-end:{events.task_id}")
    _settling.add(settling)
    settling.add_done_callback(_settling.discard)


async def _stored_turn(events: TaskEvents, task: TaskInput, continues: bool) -> StoredTurn:
    """The journal of this turn and, on a retry, its artifacts as committed."""
    retry = task.attempt > 1
    if retry and continues:
        # What this process streamed for an earlier attempt is stored first, so
        # the artifacts read are all that attempt wrote (a continuation that
        # starts from less would repeat the rest).
        await events.persisted()
    if events.steps is None:
        turn = StoredTurn([])
    else:
        turn = await events.steps.load_turn(task.task_id, events.artifact_id, artifacts=retry)
    if retry and turn.artifacts is None:
        turn.artifacts = await _task_artifacts(events)
    return turn


async def _committed_artifacts(events: TaskEvents, task: TaskInput) -> list[StoredArtifact]:
    """The turn's artifacts as the store holds them now."""
    if events.steps is not None:
        turn = await events.steps.load_turn(task.task_id, events.artifact_id, artifacts=True)
        if turn.artifacts is not None:
            return turn.artifacts
    return await _task_artifacts(events)


async def _task_artifacts(events: TaskEvents) -> list[StoredArtifact]:
    """The turn's artifacts read from the stored task (the memory store)."""
    if events.stored_task is None:
        return []
    stored = await events.stored_task()
    return [
        a
        for a in (stored.artifacts if stored is not None else [])
        if of_turn(events.artifact_id, a.artifact_id)
    ]


async def _stream(
    adapter: BaseAdapter,
    task: TaskInput,
    events: TaskEvents,
    writer: ArtifactWriter,
    usage: AttemptUsage,
    steps: AttemptSteps | None,
    on_chunk: Callable[[], None] | None,
    continuing: bool,
) -> AttemptResult:
    agen = open_stream(adapter, task)
    try:
        with usage.recording(), journaling(steps):
            produced, last = await pull(adapter, agen, writer, events.max_file_bytes, on_chunk)
        await writer.close(flush=True)
        # Once per attempt, after its text: a state change mid-stream would
        # hold up the chunks behind it (each waits for the store to take it).
        await _tell_usage(events, usage)
    except TaskStopped:
        raise
    except Exception:
        # A failed attempt was paid for too: store what it reported before the
        # retry (maybe in another process) reads the task and adds to it.
        with contextlib.suppress(Exception):
            if await _tell_usage(events, usage):
                await events.persisted()
        raise
    finally:
        await writer.close(flush=False)
        # Release a generator abandoned by an error of ours (not the adapter's).
        with contextlib.suppress(BaseException):
            await agen.aclose()
    # Nothing streamed by a retry still clears an earlier attempt's partial text
    # (or, continuing, closes the answer as stored).
    await writer.close_answer(restarted=task.attempt > 1 or continuing)
    if isinstance(last, InputRequired):
        return AttemptResult(produced, last.question)
    if isinstance(last, Done):
        return AttemptResult(produced, ended=TaskState.TASK_STATE_COMPLETED, message=last.message)
    if isinstance(last, Reject):
        return AttemptResult(
            produced, ended=TaskState.TASK_STATE_REJECTED, message=last.reason or "Rejected."
        )
    return AttemptResult(produced)


async def _tell_usage(events: TaskEvents, usage: AttemptUsage) -> bool:
    """Store newly reported usage on the task (a status update whose metadata the
    store merges into the task's); True if there was any."""
    metadata = usage.take()
    if metadata is None:
        return False
    await events.status(TaskState.TASK_STATE_WORKING, metadata=dict(metadata))
    return True

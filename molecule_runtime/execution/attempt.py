"""Runs one attempt of an adapter's `stream()` and turns its chunks into artifact events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from a2a.types.a2a_pb2 import TaskState

from molecule_runtime.adapters.base import BaseAdapter, InputRequired, TaskInput
from molecule_runtime.execution.batching import ChunkBatcher
from molecule_runtime.execution.events import TaskEvents, TaskStopped
from molecule_runtime.execution.usage import AttemptUsage, turn_of_artifact
from molecule_runtime.vocabulary import Meta


def describe_error(exc: BaseException) -> str:
    """An attempt's failure as the client is told it: type and message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AdapterProtocolError(TypeError):
    """The adapter broke the contract (e.g. yielded something that is not `str`)."""


@dataclass
class AttemptResult:
    produced: int  # characters streamed
    question: str | None = None  # set when the adapter asked for input


async def run_attempt(
    adapter: BaseAdapter,
    task: TaskInput,
    events: TaskEvents,
    *,
    on_chunk: Callable[[], None] | None = None,
    batch_window: float = 0.0,
) -> AttemptResult:
    """Stream one attempt; return what it produced.

    The answer artifact has a stable id. A later attempt starts by replacing
    whatever an earlier attempt streamed (`append=False`), so the finished
    artifact holds one execution's text only. Chunks arriving within
    `batch_window` seconds of the last event are merged (see batching.py).
    """
    if task.attempt > 1:
        await events.status(
            TaskState.TASK_STATE_WORKING,
            f"Retrying: attempt {task.attempt} restarts the answer.",
            metadata={Meta.ATTEMPT: task.attempt},
        )
    batcher = ChunkBatcher(events, batch_window)
    usage = AttemptUsage(events.usage, turn_of_artifact(task.task_id, events.artifact_id), task.attempt)
    sent_last = False
    agen = adapter.stream(task)
    if not hasattr(agen, "__anext__") or not hasattr(agen, "athrow"):
        if asyncio.iscoroutine(agen):
            agen.close()  # never awaited: close it so Python does not warn
        raise AdapterProtocolError(
            f"adapter {adapter.name()!r}: stream() returned {type(agen).__name__}, expected an "
            "async generator (write `async def stream(self, task): ... yield text`)"
        )
    try:
        with usage.recording():
            produced, question = await _pull(adapter, agen, batcher, on_chunk)
        sent_last = await batcher.close(flush=True)
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
        await batcher.close(flush=False)
        # Release a generator abandoned by an error of ours (not the adapter's).
        with contextlib.suppress(BaseException):
            await agen.aclose()
    if not batcher.sent_any and task.attempt > 1:
        # Nothing streamed this time: still clear an earlier attempt's partial text.
        await events.chunk("", append=False)
    if (batcher.sent_any or task.attempt > 1) and not sent_last:
        await events.chunk("", append=True, last=True)
    return AttemptResult(produced, question)


async def _pull(
    adapter: BaseAdapter,
    agen: AsyncIterator[object],
    batcher: ChunkBatcher,
    on_chunk: Callable[[], None] | None,
) -> tuple[int, str | None]:
    """Pull the adapter's stream into the batcher: (characters streamed, question asked)."""
    produced = 0
    while True:
        try:
            chunk = await agen.__anext__()
        except StopAsyncIteration:
            return produced, None
        if isinstance(chunk, InputRequired):
            # The turn ends here; the user's answer starts the next one.
            return produced, chunk.question
        if not isinstance(chunk, str):
            raise AdapterProtocolError(
                f"adapter {adapter.name()!r} yielded {type(chunk).__name__}, "
                "expected str or InputRequired"
            )
        if not chunk:
            continue
        try:
            await batcher.add(chunk)
        except (asyncio.CancelledError, TaskStopped):
            # Cancelled between two chunks: the generator is parked at its
            # `yield`; deliver the cancellation there, as the contract says.
            with contextlib.suppress(BaseException):
                await agen.athrow(asyncio.CancelledError())  # type: ignore[attr-defined]
            raise
        produced += len(chunk)
        if on_chunk is not None:
            on_chunk()


async def _tell_usage(events: TaskEvents, usage: AttemptUsage) -> bool:
    """Store newly reported usage on the task (a status update whose metadata the
    store merges into the task's); True if there was any."""
    metadata = usage.take()
    if metadata is None:
        return False
    await events.status(TaskState.TASK_STATE_WORKING, metadata=dict(metadata))
    return True

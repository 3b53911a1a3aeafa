"""Pulls an adapter's `stream()` into its artifacts, holding it to the contract:
what it may yield (adapters/outputs.py), which output ends the turn, how large a file may be."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from molecule_runtime.adapters.base import BaseAdapter, InputRequired, TaskInput
from molecule_runtime.adapters.outputs import DataOutput, Done, FileOutput, Reject, TextOutput
from molecule_runtime.execution.artifacts import ArtifactWriter
from molecule_runtime.execution.events import FileTooLarge, TaskStopped
from molecule_runtime.execution.parts import data_part, file_part


class AdapterProtocolError(TypeError):
    """The adapter broke the contract (e.g. yielded something it may not)."""


# The outputs that end a turn.
Last = InputRequired | Done | Reject


def open_stream(adapter: BaseAdapter, task: TaskInput) -> AsyncIterator[object]:
    """The adapter's stream for `task`, checked to be an async generator."""
    agen = adapter.stream(task)
    if not hasattr(agen, "__anext__") or not hasattr(agen, "athrow"):
        if asyncio.iscoroutine(agen):
            agen.close()  # never awaited: close it so Python does not warn
        raise AdapterProtocolError(
            f"adapter {adapter.name()!r}: stream() returned {type(agen).__name__}, expected an "
            "async generator (write `async def stream(self, task): ... yield text`)"
        )
    return agen


def checked_file(output: FileOutput, max_bytes: int) -> FileOutput:
    if output.data is not None and len(output.data) > max_bytes:
        raise FileTooLarge(
            f"file {output.name!r} has {len(output.data)} bytes, more than the "
            f"{max_bytes} a file output may have (MOLECULE_MAX_FILE_BYTES); "
            "yield a FileOutput with a url for large files"
        )
    return output


async def _put(writer: ArtifactWriter, item: object, max_file_bytes: int) -> int:
    """Write one output; the characters of text it carried."""
    if isinstance(item, str):
        if item:
            await writer.text(item)
        return len(item)
    if isinstance(item, TextOutput):
        if item.text:
            await writer.text(item.text, item.artifact)
        return len(item.text)
    if isinstance(item, FileOutput):
        await writer.part(file_part(checked_file(item, max_file_bytes)), item.artifact)
        return 0
    if isinstance(item, DataOutput):
        try:
            part = data_part(item)
        except TypeError as exc:
            raise AdapterProtocolError(str(exc)) from None
        await writer.part(part, item.artifact)
        return 0
    raise AdapterProtocolError(
        f"yielded {type(item).__name__}, expected str, TextOutput, FileOutput, DataOutput, "
        "or last InputRequired, Done or Reject"
    )


async def pull(
    adapter: BaseAdapter,
    agen: AsyncIterator[object],
    writer: ArtifactWriter,
    max_file_bytes: int,
    on_chunk: Callable[[], None] | None,
) -> tuple[int, Last | None]:
    """Pull the adapter's stream into its artifacts: (characters streamed, how it ended)."""
    produced = 0
    while True:
        try:
            item = await agen.__anext__()
        except StopAsyncIteration:
            return produced, None
        if type(item) is str:
            if not item:
                continue
        elif isinstance(item, InputRequired | Done | Reject):
            # The turn ends here (for InputRequired the user's answer starts the next one).
            return produced, item
        try:
            # Plain text, the hot path, skips the dispatch on output kinds.
            produced += await writer.text(item) if type(item) is str else await _put(
                writer, item, max_file_bytes
            )
        except AdapterProtocolError as exc:
            raise AdapterProtocolError(f"adapter {adapter.name()!r}: {exc}") from None
        except (asyncio.CancelledError, TaskStopped):
            # Cancelled between two outputs: the generator is parked at its
            # `yield`; deliver the cancellation there, as the contract says.
            with contextlib.suppress(BaseException):
                await agen.athrow(asyncio.CancelledError())  # type: ignore[attr-defined]
            raise
        if on_chunk is not None:
            on_chunk()

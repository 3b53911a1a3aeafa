"""The SDK's gRPC servicers (1.0, and 0.3 while compatibility is on), over the
same request handler as JSON-RPC and REST.

Refusals (`RetryLater`) are answered with their own status code
(server/grpc_refusals.py). gRPC has no per-message metadata, so each streamed
event carries its offset in the task's event log (SSE's `id:` on HTTP) in its
own metadata, under `molecule.event_id`; the client sends it back as
`last-event-id` metadata to resume. The handler records the offset of each
event it yields in the call state (sse_ids.set_offset), read here as the
servicer turns that event into a `StreamResponse`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import grpc.aio
from a2a.compat.v0_3.grpc_handler import CompatGrpcHandler
from a2a.server.request_handlers.grpc_handler import GrpcHandler
from a2a.types.a2a_pb2 import SendMessageRequest, StreamResponse, SubscribeToTaskRequest
from a2a.utils.errors import A2AError

from molecule_runtime.refusals import RetryLater
from molecule_runtime.server.grpc_calls import call_state
from molecule_runtime.server.grpc_refusals import abort_retry_later
from molecule_runtime.server.sse_ids import OFFSET_KEY
from molecule_runtime.vocabulary import Meta


def with_event_id(response: StreamResponse, offset: int | None) -> StreamResponse:
    """`response` with its event's log offset in the event's metadata (None: not logged)."""
    kind = response.WhichOneof("payload")
    if offset is not None and kind is not None:
        getattr(response, kind).metadata[Meta.EVENT_ID] = str(offset)
    return response


async def _with_event_ids(responses: AsyncIterable[StreamResponse]) -> AsyncIterator[StreamResponse]:
    try:
        async for response in responses:
            state = call_state()
            yield with_event_id(response, state.pop(OFFSET_KEY, None) if state is not None else None)
    finally:
        # A client that goes away must end the handler's stream (and its
        # event-log follower) now, not at garbage collection.
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            await aclose()


class RuntimeGrpcHandler(GrpcHandler):
    """The SDK's gRPC servicer; refusals answered with their own status code,
    streamed events stamped with their log offset."""

    async def abort_context(self, error: A2AError, context: grpc.aio.ServicerContext) -> None:
        if isinstance(error, RetryLater):
            await abort_retry_later(error, context)
        await super().abort_context(error, context)

    async def SendStreamingMessage(
        self, request: SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[StreamResponse]:
        stream = super().SendStreamingMessage(request, context)
        async for response in _with_event_ids(stream):
            yield response

    async def SubscribeToTask(
        self, request: SubscribeToTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[StreamResponse]:
        stream = super().SubscribeToTask(request, context)
        async for response in _with_event_ids(stream):
            yield response


class RuntimeCompatGrpcHandler(CompatGrpcHandler):
    """The SDK's A2A 0.3 gRPC servicer, refusals answered as above."""

    async def abort_context(self, error: A2AError, context: grpc.aio.ServicerContext) -> None:
        if isinstance(error, RetryLater):
            await abort_retry_later(error, context)
        await super().abort_context(error, context)

"""SSE event ids: each streamed event carries its offset in the task's event log.

The SDK's dispatchers build SSE frames without an `id:` field and give the
handler no way to add one. The handler records the offset of the event it is
about to yield in the call context's state; the endpoint wrapper below reads it
as the dispatcher turns that event into an SSE frame (the generators are
chained, so nothing runs in between) and stamps it on the frame. Clients send
the last id they saw back as `Last-Event-ID` to resume.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.utils.errors import InvalidParamsError
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from molecule_runtime.server.complexity import SHAPE_CHECKED
from molecule_runtime.server.routes import Endpoint, wrap_endpoints

# Call-context state key: offset of the event being yielded (None: not logged).
OFFSET_KEY = "molecule.event_offset"
_SCOPE_KEY = "molecule.call_state"
# The largest event offset a store holds (a signed 64-bit integer column).
MAX_OFFSET = 2**63 - 1


class EventIdContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, with its state reachable from the endpoint wrapper."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        # The body's JSON was bounded before parsing (server/limits.py).
        context.state[SHAPE_CHECKED] = bool(request.scope.get(SHAPE_CHECKED))
        box = request.scope.get(_SCOPE_KEY)
        if isinstance(box, dict):
            box["state"] = context.state
        return context


def requested_offset(context: ServerCallContext) -> int | None:
    """The `Last-Event-ID` the client sent, if any."""
    headers = context.state.get("headers") or {}
    raw = headers.get("last-event-id")
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        # At most 19 digits: int() of a longer text costs time for nothing.
        offset = int(text) if len(text) <= 20 else MAX_OFFSET + 1
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise InvalidParamsError(
            message=f"Last-Event-ID must be an event id sent by this server, not {shown!r}"
        ) from None
    if offset < 0:
        raise InvalidParamsError(message="Last-Event-ID must not be negative")
    if offset > MAX_OFFSET:
        # Not an id this server sent: the stores keep offsets as 64-bit integers.
        raise InvalidParamsError(message="Last-Event-ID is not an event id sent by this server")
    return offset


def set_offset(context: ServerCallContext, offset: int | None) -> None:
    context.state[OFFSET_KEY] = offset


async def _with_ids(items: AsyncIterator[Any], state: dict[str, Any]) -> AsyncIterator[Any]:
    try:
        async for item in items:
            offset = state.pop(OFFSET_KEY, None)
            if offset is not None:
                if isinstance(item, dict) and "event" not in item:  # JSON-RPC frames
                    item = {**item, "id": str(offset)}
                elif isinstance(item, ServerSentEvent) and item.event is None:  # REST frames
                    item.id = str(offset)
            yield item
    finally:
        # A client that goes away must still end the handler's stream (and
        # its event-log follower) now, not at garbage collection.
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()




def _stamp_ids(endpoint: Endpoint) -> Endpoint:
    @functools.wraps(endpoint)
    async def endpoint_with_ids(request: Request) -> Response:
        box: dict[str, Any] = {}
        request.scope[_SCOPE_KEY] = box
        response = await endpoint(request)
        state = box.get("state")
        if isinstance(response, EventSourceResponse) and state is not None:
            response.body_iterator = _with_ids(response.body_iterator, state)
        return response

    return endpoint_with_ids


def with_event_ids(routes: list[BaseRoute]) -> list[BaseRoute]:
    """The SDK's A2A routes, their SSE responses stamped with event ids."""
    return wrap_endpoints(routes, _stamp_ids)

"""The answer to a request refused by admission control: server busy, retry later.

The SDK turns an A2A error into an answer through fixed tables
(`a2a.utils.errors.A2A_ERROR_MAPPING` for the REST status,
`JSON_RPC_ERROR_CODE_MAP` for the JSON-RPC code) that know only its own error
types: ours would be answered REST `500 INTERNAL` / JSON-RPC `-32603`, and no
binding lets an error set a header such as `Retry-After`. So the refusal is
answered here, in one place. The request handler notes the `ServerBusyError`
in a box this wrapper gives each request (a context variable) before raising
it; when the endpoint returns, a noted refusal replaces the SDK's answer:

* REST: `503 Service Unavailable`, `Retry-After`, the SDK's REST error body
  shape with status `UNAVAILABLE` and reason `SERVER_BUSY`;
* JSON-RPC (1.0 and 0.3): error code `-32000` with the same message and
  details, and `Retry-After`. The 0.3 `message/stream` reports errors inside
  its SSE stream, so there the error event is rewritten instead.

tests/test_admission.py pins the SDK behaviour this relies on.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, Literal

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from molecule_runtime.execution.admission import ServerBusyError
from molecule_runtime.server.routes import Endpoint, wrap_endpoints

# JSON-RPC 2.0 leaves -32000..-32099 to servers; A2A numbers its own errors
# from -32001 up, so -32000 ("server error") stays clear of them.
SERVER_BUSY_CODE = -32000
REASON = "SERVER_BUSY"
DOMAIN = "molecule-runtime"
# The one method whose refusal arrives after the endpoint returned (see above).
V03_STREAM = "message/stream"

Binding = Literal["rest", "jsonrpc"]

_refusals: ContextVar[list[ServerBusyError] | None] = ContextVar(
    "molecule_refusals", default=None
)


def note_refusal(error: ServerBusyError) -> None:
    """Called by the request handler just before it raises `error`."""
    box = _refusals.get()
    if box is not None:
        box.append(error)


def error_details(error: ServerBusyError) -> list[dict[str, Any]]:
    """google.rpc details, as the SDK gives them for its own errors (plus RetryInfo)."""
    return [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": REASON,
            "domain": DOMAIN,
            "metadata": {
                "retryAfterSeconds": str(error.retry_after),
                "maxRunningTasks": str(error.max_running),
                "maxQueuedTasks": str(error.max_queued),
            },
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{error.retry_after}s"},
    ]


def jsonrpc_error(error: ServerBusyError, request_id: object) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": SERVER_BUSY_CODE, "message": error.message, "data": error_details(error)},
    }


def _answer(error: ServerBusyError, binding: Binding, sdk_answer: Response) -> Response:
    headers = {"Retry-After": str(error.retry_after)}
    if binding == "rest":
        body = {
            "error": {
                "code": 503,
                "status": "UNAVAILABLE",
                "message": error.message,
                "details": error_details(error),
            }
        }
        return JSONResponse(body, status_code=503, headers=headers)
    # JSON-RPC: the SDK's answer already carries the request id it validated.
    request_id = None
    try:
        request_id = json.loads(bytes(sdk_answer.body)).get("id")
    except (AttributeError, ValueError):
        pass
    return JSONResponse(jsonrpc_error(error, request_id), headers=headers)


async def _rewrite_stream(items: AsyncIterator[Any], box: list[ServerBusyError]) -> AsyncIterator[Any]:
    """A 0.3 `message/stream` refused on its first read: its error event says server busy."""
    try:
        async for item in items:
            if box and isinstance(item, dict) and isinstance(item.get("data"), str):
                try:
                    request_id = json.loads(item["data"]).get("id")
                except ValueError:
                    request_id = None
                item = {**item, "data": json.dumps(jsonrpc_error(box[0], request_id))}
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


async def _method(request: Request) -> object:
    try:
        body = await request.json()  # parsed by the dispatcher already: cached
    except ValueError:
        return None
    return body.get("method") if isinstance(body, dict) else None


def _answering_busy(endpoint: Endpoint, binding: Binding) -> Endpoint:
    @functools.wraps(endpoint)
    async def endpoint_answering_busy(request: Request) -> Response:
        box: list[ServerBusyError] = []
        # Not reset: a streamed body is read after this returns, in this task's context.
        _refusals.set(box)
        response = await endpoint(request)
        if box:
            return _answer(box[0], binding, response)
        if (
            binding == "jsonrpc"
            and isinstance(response, EventSourceResponse)
            and await _method(request) == V03_STREAM
        ):
            response.body_iterator = _rewrite_stream(response.body_iterator, box)
        return response

    return endpoint_answering_busy


def answering_busy(routes: list[BaseRoute], binding: Binding) -> list[BaseRoute]:
    """The SDK's A2A routes of one binding, answering admission refusals as above."""
    return wrap_endpoints(routes, functools.partial(_answering_busy, binding=binding))

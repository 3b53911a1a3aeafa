"""The answer to a request refused before anything was done: retry later.

Refusals are admission control's (server busy: 503), the per-principal
limits' (too many tasks or requests: 429) and the task store's while it
cannot write (store unavailable: 503); all are `RetryLater` errors.

The SDK turns an A2A error into an answer through fixed tables
(`a2a.utils.errors.A2A_ERROR_MAPPING` for the REST status,
`JSON_RPC_ERROR_CODE_MAP` for the JSON-RPC code) that know only its own error
types: ours would be answered REST `500 INTERNAL` / JSON-RPC `-32603`, and no
binding lets an error set a header such as `Retry-After`. So the refusal is
answered here, in one place. The request handler notes the `ServerBusyError`
in a box this wrapper gives each request (a context variable) before raising
it; when the endpoint returns, a noted refusal replaces the SDK's answer:

* REST: `503 Service Unavailable` (or `429 Too Many Requests`), `Retry-After`,
  the SDK's REST error body shape with status `UNAVAILABLE` (`RESOURCE_EXHAUSTED`)
  and reason `SERVER_BUSY` (`PRINCIPAL_TASK_LIMIT`, `PRINCIPAL_RATE_LIMIT`);
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

from molecule_runtime.refusals import RetryLater
from molecule_runtime.server.quotas import RequestRate, owner_of_request
from molecule_runtime.server.routes import Endpoint, wrap_endpoints
from molecule_runtime.store.health import REFUSAL_HOOKS

# JSON-RPC 2.0 leaves -32000..-32099 to servers; A2A numbers its own errors
# from -32001 up, so -32000 ("server error") stays clear of them.
SERVER_BUSY_CODE = -32000
DOMAIN = "molecule-runtime"
# The one method whose refusal arrives after the endpoint returned (see above).
V03_STREAM = "message/stream"

Binding = Literal["rest", "jsonrpc"]

_refusals: ContextVar[list[RetryLater] | None] = ContextVar(
    "molecule_refusals", default=None
)


def note_refusal(error: RetryLater) -> None:
    """Called by the request handler just before it raises `error`."""
    box = _refusals.get()
    if box is not None:
        box.append(error)


# The task store refuses a request it cannot serve while it is away (store/health.py).
REFUSAL_HOOKS.append(note_refusal)


def _is_error(response: Response) -> bool:
    """The SDK answered with an error (REST: a 4xx/5xx; JSON-RPC: an `error` member)."""
    if isinstance(response, EventSourceResponse):
        return False
    if response.status_code >= 400:
        return True
    try:
        body = json.loads(bytes(response.body))
    except (AttributeError, ValueError):
        return False
    return isinstance(body, dict) and "error" in body


def error_details(error: RetryLater) -> list[dict[str, Any]]:
    """google.rpc details, as the SDK gives them for its own errors (plus RetryInfo)."""
    return [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": error.reason,
            "domain": DOMAIN,
            "metadata": error.metadata(),
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{error.retry_after}s"},
    ]


def jsonrpc_error(error: RetryLater, request_id: object) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": SERVER_BUSY_CODE, "message": error.message, "data": error_details(error)},
    }


def _answer(error: RetryLater, binding: Binding, request_id: object = None) -> Response:
    headers = {"Retry-After": str(error.retry_after)}
    if binding == "rest":
        body = {
            "error": {
                "code": error.http_status,
                "status": error.status,
                "message": error.message,
                "details": error_details(error),
            }
        }
        return JSONResponse(body, status_code=error.http_status, headers=headers)
    return JSONResponse(jsonrpc_error(error, request_id), headers=headers)


def _id_of(sdk_answer: Response) -> object:
    """The request id the SDK's JSON-RPC answer carries (it validated it)."""
    try:
        return json.loads(bytes(sdk_answer.body)).get("id")
    except (AttributeError, ValueError):
        return None


async def _request_id(request: Request) -> object:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body.get("id") if isinstance(body, dict) else None


async def _rewrite_stream(items: AsyncIterator[Any], box: list[RetryLater]) -> AsyncIterator[Any]:
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


def _answering_busy(endpoint: Endpoint, binding: Binding, rate: RequestRate | None) -> Endpoint:
    @functools.wraps(endpoint)
    async def endpoint_answering_busy(request: Request) -> Response:
        if rate is not None:
            try:
                rate.take(owner_of_request(request))
            except RetryLater as refused:
                request_id = await _request_id(request) if binding == "jsonrpc" else None
                return _answer(refused, binding, request_id)
        box: list[RetryLater] = []
        # Not reset: a streamed body is read after this returns, in this task's context.
        _refusals.set(box)
        response = await endpoint(request)
        # A store read that failed for now may have been retried and succeeded:
        # only an answer that is an error is replaced by the refusal.
        if box and _is_error(response):
            return _answer(box[0], binding, _id_of(response))
        if (
            binding == "jsonrpc"
            and isinstance(response, EventSourceResponse)
            and await _method(request) == V03_STREAM
        ):
            response.body_iterator = _rewrite_stream(response.body_iterator, box)
        return response

    return endpoint_answering_busy


def answering_busy(
    routes: list[BaseRoute], binding: Binding, rate: RequestRate | None = None
) -> list[BaseRoute]:
    """The SDK's A2A routes of one binding, answering refusals as above; with
    `rate`, each request first takes a token of its principal's bucket."""
    return wrap_endpoints(routes, functools.partial(_answering_busy, binding=binding, rate=rate))

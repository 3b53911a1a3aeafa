"""Request limits: a cap on body size, a deadline for receiving the body, and
bounds on the body's JSON (nesting depth, number of values).

A2A requests are small JSON documents that the SDK reads whole before acting,
so the body is read here first, counted as it arrives (a chunked body has no
Content-Length to trust), and handed on in one piece. A client that sends
too much gets 413; one that trickles its body past the deadline gets 408, so
neither can hold a request (and its memory) open indefinitely. (The deadline
for a request's headers is uvicorn's part: server/header_timeout.py.)

The SDK parses a body and builds its protobuf request on the event loop, at
about 2.5 µs a JSON value: a 4 MiB body of a million values would stop every
other client for seconds, and a deeply nested one makes Python's parser fail
with an "internal" RecursionError. So the body's shape is measured first, on
its bytes and at C speed (strings cut out, then the brackets and commas
counted), and a body over MOLECULE_MAX_JSON_DEPTH or MOLECULE_MAX_JSON_VALUES
is refused as an invalid request naming the setting, before anything parses it.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import InvalidRequestError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from molecule_runtime.server.complexity import SHAPE_CHECKED

# A JSON string (escapes included): cut out before brackets are counted.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b"[]{},")
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")
# A `historyLength` member and its number (also as a string, which the 0.3
# models accept). Inside a JSON string its quotes would be escaped, so the
# pattern matches members only.
_HISTORY_LENGTH = re.compile(rb'"historyLength"\s*:\s*"?\s*(-?[0-9][0-9.eE+-]{0,30})')
# Bodies up to this size are measured on the event loop; bigger ones in a
# thread (a 4 MiB body takes up to ~0.2 s).
_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class JsonShape:
    values: int  # scalars, arrays and objects (an upper bound for `[]` and `{}`)
    depth: int | None  # None: deeper than asked about
    malformed: bool = False  # brackets that do not pair up


def json_shape(body: bytes, max_depth: int) -> JsonShape:
    """The nesting depth (up to `max_depth`) and the number of values of a JSON text.

    Works on bytes with C-speed operations only: no parser recursion, no
    Python object per value. Brackets inside strings do not count.
    """
    skeleton = _STRING.sub(b"", body).translate(None, _NOT_STRUCTURE)
    values = skeleton.count(b",") + skeleton.count(b"[") + skeleton.count(b"{") + 1
    brackets = skeleton.translate(_ONE_BRACKET, b",")
    too_deep = b"[" * (max_depth + 1)
    for depth in range(max_depth + 1):
        if not brackets:
            return JsonShape(values, depth)
        if too_deep in brackets:
            return JsonShape(values, None)
        inner = brackets.replace(b"[]", b"")  # every innermost pair: one level less
        if len(inner) == len(brackets):
            return JsonShape(values, depth, malformed=True)
        brackets = inner
    return JsonShape(values, None)


class RequestLimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout: float,
        max_json_depth: int = 64,
        max_json_values: int = 10_000,
        max_history_length: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.max_json_depth = max_json_depth
        self.max_json_values = max_json_values
        self.max_history_length = max_history_length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            # Refused before reading a byte of it.
            await _reject(send, 413, self._too_large())
            return
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left; nobody to answer
                    body = message.get("body", b"")
                    received += len(body)
                    if received > self.max_body_bytes:
                        await _reject(send, 413, self._too_large())
                        return
                    chunks.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _reject(
                send,
                408,
                f"the request body did not arrive within {self.body_timeout:g} s "
                "(MOLECULE_REQUEST_TIMEOUT)",
            )
            return

        body = b"".join(chunks)
        if not _is_utf8(body):
            # JSON is UTF-8 (RFC 8259); the SDK's REST routes answer 500 to other bytes.
            await _reject_encoding(scope, send)
            return
        if body:
            if len(body) > _INLINE_BYTES:
                refusal = await asyncio.to_thread(self._shape_refusal, body)
            else:
                refusal = self._shape_refusal(body)
            if refusal is not None:
                await _reject_invalid(scope, send, *refusal)
                return
            # The request handler need not count this body's values again.
            scope[SHAPE_CHECKED] = True
        buffered: Message | None = {"type": "http.request", "body": body, "more_body": False}

        async def replay() -> Message:
            nonlocal buffered
            if buffered is not None:
                message, buffered = buffered, None
                return message
            # After the body, receive() only reports the client going away,
            # which streaming responses listen for.
            return await receive()

        await self.app(scope, replay, send)

    def _shape_refusal(self, body: bytes) -> tuple[int, str] | None:
        """(JSON-RPC code, message) when the body's JSON is over a limit or cannot parse."""
        shape = json_shape(body, self.max_json_depth)
        if shape.depth is None:
            return -32600, (
                f"the request's JSON is nested deeper than {self.max_json_depth} levels "
                "(MOLECULE_MAX_JSON_DEPTH)"
            )
        if shape.values > self.max_json_values:
            return -32600, (
                f"the request's JSON holds more than {self.max_json_values} values "
                "(MOLECULE_MAX_JSON_VALUES)"
            )
        if shape.malformed:
            return -32700, "the request body is not valid JSON (its brackets do not pair up)"
        if self.max_history_length is not None:
            # Checked here too: the 0.3 methods convert it to a 32-bit protobuf
            # field before the request handler sees it, and a bigger number
            # failed that conversion as an internal error.
            for match in _HISTORY_LENGTH.finditer(body):
                try:
                    requested = float(match.group(1))
                except ValueError:
                    continue  # not a number: the parsers refuse it
                if requested > self.max_history_length:
                    shown = match.group(1).decode()
                    return -32602, (
                        f"historyLength is at most {self.max_history_length}, not {shown} "
                        "(MOLECULE_MAX_HISTORY_LENGTH)"
                    )
        return None

    def _too_large(self) -> str:
        return (
            f"the request body exceeds {self.max_body_bytes} bytes (MOLECULE_MAX_REQUEST_BYTES)"
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser rejects such requests before us
    return None


def _is_utf8(body: bytes) -> bool:
    # NUL never occurs in JSON text (it must be escaped inside strings), but it
    # makes json.loads() guess UTF-16/32 and fail with an "internal" error.
    if b"\x00" in body:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def _reject_encoding(scope: Scope, send: Send) -> None:
    detail = "the request body is not UTF-8 JSON text (it is not UTF-8, or holds NUL bytes)"
    if scope["path"] == "/":
        # The JSON-RPC endpoint: a JSON-RPC parse error, as the SDK gives for bad JSON.
        error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": detail}}
        await _send_json(send, 200, error, close=False)
    else:
        await _send_json(send, 400, {"error": "bad_request", "detail": detail}, close=False)


async def _reject_invalid(scope: Scope, send: Send, code: int, message: str) -> None:
    """Refused before parsing: a JSON-RPC error on the JSON-RPC endpoint (its id
    is unknown: null), the SDK's REST error body (400 INVALID_ARGUMENT) elsewhere."""
    if scope["path"] == "/":
        error = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
        await _send_json(send, 200, error, close=False)
    else:
        payload = build_rest_error_payload(InvalidRequestError(message=message))
        await _send_json(send, 400, payload, close=False)


async def _reject(send: Send, status: int, detail: str) -> None:
    error = "request_too_large" if status == 413 else "request_timeout"
    # The rest of the body is never read: the connection cannot be reused.
    await _send_json(send, status, {"error": error, "detail": detail}, close=True)


async def _send_json(send: Send, status: int, payload: object, *, close: bool) -> None:
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

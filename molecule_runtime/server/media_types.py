"""HTTP+JSON answers in the media type the client used.

The SDK labels every REST answer `application/a2a+json`. A2A's HTTP+JSON
binding (§11.1) says `application/json`, while the spec's own examples use the
A2A type, and clients check either. So an answer is `application/a2a+json`
when the client named that type (as its request's `Content-Type`, or in
`Accept` without `application/json`), and `application/json` otherwise,
including when it named none; errors too. Streams (`text/event-stream`) are
left alone.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

A2A_JSON = b"application/a2a+json"
JSON = b"application/json"


def _types(value: bytes) -> list[bytes]:
    return [item.split(b";", 1)[0].strip().lower() for item in value.split(b",")]


def wants_a2a_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """The client named `application/a2a+json` (and, in Accept, not plain JSON)."""
    content_type = b""
    accept: list[bytes] = []
    for name, value in headers:
        if name == b"content-type":
            content_type = value
        elif name == b"accept":
            accept += _types(value)
    if content_type and _types(content_type)[0] == A2A_JSON:
        return True
    return A2A_JSON in accept and JSON not in accept


class ClientMediaType:
    """Labels JSON answers under `prefix` with the client's JSON media type."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        wanted, other = (A2A_JSON, JSON) if wants_a2a_json(scope.get("headers", [])) else (JSON, A2A_JSON)

        async def relabelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, wanted if name == b"content-type" and _types(value)[0] == other else value)
                    for name, value in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, relabelled)

"""Bearer-token authentication for every A2A route (the agent card and health stay public)."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = frozenset(
    {
        "/.well-known/agent-card.json",
        "/.well-known/agent.json",
        "/healthz",
        "/readyz",
        "/metrics",
    }
)


class BearerAuthMiddleware:
    """Rejects requests without `Authorization: Bearer <token>` with 401.

    The compare is constant-time; the token is never logged.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    def _authorized(self, header: bytes) -> bool:
        # The scheme name is case-insensitive (RFC 9110); the token is not.
        scheme, _, supplied = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(supplied.strip(b" "), self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        supplied = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                supplied = value
                break
        if self._authorized(supplied):
            # Checked: the token goes no further, so nothing downstream (the
            # SDK's DEBUG logs of the call context, adapters) can record it.
            headers = [(n, v) for n, v in scope["headers"] if n != b"authorization"]
            await self.app({**scope, "headers": headers}, receive, send)
            return
        body = json.dumps(
            {"error": "unauthorized", "detail": "send Authorization: Bearer <MOLECULE_AUTH_TOKEN>"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="molecule-runtime"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

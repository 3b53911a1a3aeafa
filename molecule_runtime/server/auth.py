"""Authentication of every A2A route: the request's principal, or 401.

The agent card and health stay public; /metrics is public unless
MOLECULE_METRICS_PUBLIC=false. The principal goes into the ASGI scope as the
Starlette `user`, from which the SDK builds `ServerCallContext.user`, whose
name is the owner scope of every task, push config and subscription.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from molecule_runtime.server.principals import Authenticator
from molecule_runtime.store.owners import PrincipalUser

PUBLIC_PATHS = frozenset(
    {
        "/.well-known/agent-card.json",
        "/.well-known/agent.json",
        "/healthz",
        "/readyz",
    }
)
METRICS_PATH = "/metrics"

# Says only that a credential is needed, never why one was refused: an expired
# token, an unknown key and a forged signature look the same from outside.
_MESSAGE = "Unauthenticated: send Authorization: Bearer <credential>"
# The JSON-RPC endpoint answers a JSON-RPC error (clients read any `error` key
# there as one; the request's id is unknown, its body is not read); every other
# path the AIP-193 error that HTTP+JSON uses for all its errors.
JSONRPC_PATH = "/"
UNAUTHENTICATED_CODE = -32040
_JSONRPC_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": UNAUTHENTICATED_CODE,
            "message": _MESSAGE,
            "data": {"reason": "UNAUTHENTICATED", "httpStatus": 401},
        },
    }
).encode()
_REST_BODY = json.dumps(
    {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": _MESSAGE}}
).encode()


class AuthMiddleware:
    """Refuses requests without a valid bearer credential with 401."""

    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, *, metrics_public: bool = True
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public = PUBLIC_PATHS | ({METRICS_PATH} if metrics_public else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        supplied = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                supplied = value
                break
        principal = await self.authenticator.authenticate(supplied) if supplied else None
        if principal is not None:
            # Checked: the credential goes no further, so nothing downstream (the
            # SDK's DEBUG logs of the call context, adapters) can record it.
            headers = [(n, v) for n, v in scope["headers"] if n != b"authorization"]
            user = PrincipalUser(principal)
            await self.app({**scope, "headers": headers, "user": user}, receive, send)
            return
        challenge = b'Bearer realm="molecule-runtime"'
        if supplied:
            challenge += b', error="invalid_token"'
        body = _JSONRPC_BODY if scope["path"] == JSONRPC_PATH else _REST_BODY
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", challenge),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

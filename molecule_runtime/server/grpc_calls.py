"""The call context of a gRPC call: its user and its request metadata.

The guard interceptor authenticates the call and sets its principal in a
context variable (grpc.aio runs an RPC's interceptors and its handler in one
`contextvars.Context`); the context builder below reads it back as the SDK's
user, and records the call state, where the handler puts the log offset of
each event it yields (read by server/grpc_servicers.py).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import grpc.aio
from a2a.auth.user import UnauthenticatedUser, User
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.grpc_handler import DefaultGrpcServerCallContextBuilder

from molecule_runtime.store.owners import Principal, PrincipalUser

AUTHORIZATION = "authorization"

# The principal of the RPC being served (None: auth is off).
_principal: ContextVar[Principal | None] = ContextVar("molecule_grpc_principal", default=None)
# The call state of the RPC being served, where the handler records event offsets.
_call_state: ContextVar[dict[str, Any] | None] = ContextVar("molecule_grpc_call_state", default=None)


def set_principal(principal: Principal) -> None:
    """The authenticated principal of the RPC being served."""
    _principal.set(principal)


def call_state() -> dict[str, Any] | None:
    """The call state of the RPC being served (None before its context is built)."""
    return _call_state.get()


class PrincipalContextBuilder(DefaultGrpcServerCallContextBuilder):
    """The SDK's call context, with the interceptor's principal and the request
    metadata as `headers` (like HTTP's, e.g. `last-event-id` to resume a
    subscription), the credential left out."""

    def build(self, context: grpc.aio.ServicerContext) -> ServerCallContext:
        call = super().build(context)
        headers: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if key != AUTHORIZATION and isinstance(value, str):
                headers[key.lower()] = value
        call.state["headers"] = headers
        _call_state.set(call.state)
        return call

    def build_user(self, context: grpc.aio.ServicerContext) -> User:
        principal = _principal.get()
        return PrincipalUser(principal) if principal is not None else UnauthenticatedUser()

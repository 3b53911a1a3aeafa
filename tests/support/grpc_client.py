"""A2A clients over the gRPC binding (the a2a-sdk client with its GRPC transport).

`make_grpc_client(url, token=...)` resolves the agent card over HTTP at `url`
and talks gRPC to the interface the card lists, like any client would; a
server under test needs `MOLECULE_GRPC_PORT` (see `grpc_env`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import httpx
from a2a.client import ClientConfig, create_client
from a2a.client.client import Client

from tests.support.procs import free_port


def grpc_env(port: int | None = None, **extra: str) -> dict[str, str]:
    """Server environment with the gRPC binding on (a free port unless given)."""
    return {"MOLECULE_GRPC_PORT": str(port or free_port()), **extra}


def _with_bearer(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {token}")
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# Two classes: a channel files each interceptor under the first kind it is.
class _BearerUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        return await continuation(_with_bearer(details, self.token), request)


class _BearerStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        return await continuation(_with_bearer(details, self.token), request)


def grpc_channel_factory(token: str | None = None) -> Callable[[str], grpc.aio.Channel]:
    """Channels to the target a card names, sending `authorization: Bearer <token>`."""
    interceptors = [_BearerUnary(token), _BearerStream(token)] if token else None
    return lambda target: grpc.aio.insecure_channel(target, interceptors=interceptors)


async def make_grpc_client(url: str, *, streaming: bool = True, token: str | None = None) -> Client:
    """An a2a-sdk client of the agent at `url` (its HTTP base URL) using gRPC."""
    config = ClientConfig(
        streaming=streaming,
        httpx_client=httpx.AsyncClient(timeout=httpx.Timeout(60.0)),
        supported_protocol_bindings=["GRPC"],
        grpc_channel_factory=grpc_channel_factory(token),
    )
    return await create_client(url, client_config=config)

"""The gRPC server interceptor: what HTTP does in middleware, before any handler runs.

* authentication: the `authorization` metadata entry, checked by the same
  `Authenticator` (refused: `UNAUTHENTICATED`); the principal reaches the
  call context through server/grpc_calls.py;
* requests per minute per principal (refused: `RESOURCE_EXHAUSTED`);
* the `a2a-version` metadata of a call to the 1.0 service: a version this
  service does not speak is refused with VersionNotSupportedError (the SDK's
  servicer does not check it); no version is taken as the service's own;
* the caller's W3C `traceparent` metadata becomes the current trace context,
  so the task's stage spans join the caller's trace as they do over HTTP;
* request bytes that are not the method's message: `INVALID_ARGUMENT`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from opentelemetry import context as otel_context
from opentelemetry import propagate

from molecule_runtime.refusals import RetryLater
from molecule_runtime.server.grpc_calls import AUTHORIZATION, set_principal
from molecule_runtime.server.grpc_refusals import (
    abort_retry_later,
    refusing,
    unauthenticated,
    version_not_supported,
)
from molecule_runtime.server.principals import Authenticator
from molecule_runtime.server.quotas import RequestRate
from molecule_runtime.store.owners import Principal

# The 1.0 service's methods, and the versions it answers (major.minor).
SERVICE_1_0 = "/lf.a2a.v1.A2AService/"
SPOKEN_1_0 = ("1", "0")
VERSION_METADATA = "a2a-version"


def speaks(version: str) -> bool:
    """An `a2a-version` the 1.0 service answers: 1.0 (any patch)."""
    return tuple(version.strip().split(".")[:2]) == SPOKEN_1_0


class _Undecodable:
    """Stands for request bytes that are not the method's message."""


_UNDECODABLE = _Undecodable()


def _decoding_checked(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler`, answering INVALID_ARGUMENT to bytes that do not decode.

    grpcio answers a request its deserializer cannot decode with UNKNOWN and
    logs an ERROR with a traceback: a client's mistake reported as the
    server's. Here the deserializer hands on a marker instead, and the call is
    refused before the servicer sees it.
    """
    decode = handler.request_deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return decode(data) if decode is not None else data
        except DecodeError:
            return _UNDECODABLE

    async def refuse(context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message of this method"
        )

    if handler.unary_stream is not None:
        streamed = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if request is _UNDECODABLE:
                await refuse(context)
            async for response in streamed(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )
    if handler.unary_unary is None:
        return handler  # the A2A services have unary and server-streaming methods only
    unary = handler.unary_unary

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _UNDECODABLE:
            await refuse(context)
        return await unary(request, context)

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=deserialize, response_serializer=handler.response_serializer
    )


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Authentication and the per-principal request rate, before any handler runs."""

    def __init__(self, authenticator: Authenticator, rate: RequestRate | None) -> None:
        self.authenticator = authenticator
        self.rate = rate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED
        handler = _decoding_checked(handler)
        metadata = {
            key: value
            for key, value in details.invocation_metadata or ()  # type: ignore[attr-defined]
            if isinstance(value, str)
        }
        # This RPC's own contextvars.Context: nothing to detach afterwards.
        otel_context.attach(propagate.extract(metadata))
        principal: Principal | None = None
        if self.authenticator.enabled:
            supplied = metadata.get(AUTHORIZATION, "").encode()
            principal = await self.authenticator.authenticate(supplied) if supplied else None
            if principal is None:
                return refusing(handler, unauthenticated)
            set_principal(principal)
        if self.rate is not None:
            try:
                self.rate.take(principal.owner if principal is not None else "")
            except RetryLater as refused:
                return refusing(handler, functools.partial(abort_retry_later, refused))
        version = metadata.get(VERSION_METADATA, "")
        if version and details.method.startswith(SERVICE_1_0) and not speaks(version):
            return refusing(handler, functools.partial(version_not_supported, version))
        return handler

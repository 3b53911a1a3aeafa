"""The A2A gRPC binding on its own port (MOLECULE_GRPC_PORT), next to the HTTP ones.

It serves the a2a-sdk's gRPC servicer (and, with 0.3 compatibility on, the
0.3 one) over the *same* request handler as JSON-RPC and REST, so admission,
per-principal task limits, owner isolation, the task store, the event log and
durable mode behave exactly as on HTTP. What HTTP does in middleware is done
here by one server interceptor:

* authentication: the `authorization` metadata entry, checked by the same
  `Authenticator` (refused: `UNAUTHENTICATED`); the principal reaches the
  call context through a context variable (grpc.aio runs an RPC's
  interceptors and its handler in one `contextvars.Context`);
* requests per minute per principal (refused: `RESOURCE_EXHAUSTED`);
* the `a2a-version` metadata of a call to the 1.0 service: a version this
  service does not speak is refused with VersionNotSupportedError, whose gRPC
  status A2A gives as `UNIMPLEMENTED` (the SDK's servicer does not check it);
  no version is taken as the service's own;
* the caller's W3C `traceparent` metadata becomes the current trace context,
  so the task's stage spans join the caller's trace as they do over HTTP.

Refusals the request handler raises (`RetryLater`: server busy, too many
tasks) are not in the SDK's gRPC error table, which would answer `UNKNOWN`;
they are answered here with their own status code, an `ErrorInfo` and a
`RetryInfo` detail, and `retry-after` trailing metadata. The request size
limit is gRPC's own receive limit, set to MOLECULE_MAX_REQUEST_BYTES; what it
sends is not limited (a task holds files of up to MOLECULE_MAX_FILE_BYTES each).

gRPC has no per-message metadata, so each streamed event carries its offset in
the task's event log (SSE's `id:` on HTTP) in its own metadata, under
`molecule.event_id`; the client sends it back as `last-event-id` metadata to
resume. The handler records the offset of each event it yields in the call
state (sse_ids.set_offset), read here as the servicer turns that event into a
`StreamResponse`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
import grpc.aio
from a2a.auth.user import UnauthenticatedUser, User
from a2a.compat.v0_3 import a2a_v0_3_pb2_grpc
from a2a.compat.v0_3.grpc_handler import CompatGrpcHandler
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.grpc_handler import (
    DefaultGrpcServerCallContextBuilder,
    GrpcHandler,
)
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import SendMessageRequest, StreamResponse, SubscribeToTaskRequest
from a2a.utils.errors import A2A_ERROR_REASONS, A2AError, VersionNotSupportedError
from a2a.utils.grpc_status import status_to_grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import context as otel_context
from opentelemetry import propagate

from molecule_runtime.config import Settings
from molecule_runtime.execution.admission import RetryLater
from molecule_runtime.server.busy import DOMAIN
from molecule_runtime.server.principals import Authenticator, Principal
from molecule_runtime.server.quotas import RequestRate
from molecule_runtime.server.sse_ids import OFFSET_KEY
from molecule_runtime.vocabulary import Meta

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
UNAUTHENTICATED_DETAIL = "send metadata authorization: Bearer <credential>"

# The principal of the RPC being served (None: auth is off).
_principal: ContextVar[Principal | None] = ContextVar("molecule_grpc_principal", default=None)
# The call state of the RPC being served, where the handler records event offsets.
_call_state: ContextVar[dict[str, Any] | None] = ContextVar("molecule_grpc_call_state", default=None)


class GrpcUser(User):
    """The call context's user: its name is the owner scope the stores filter by."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self.principal.owner


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
        return GrpcUser(principal) if principal is not None else UnauthenticatedUser()


def refusal_status(error: RetryLater) -> tuple[grpc.StatusCode, str, tuple[Any, ...]]:
    """Status code, message and trailing metadata of a refusal (the rich status
    the SDK gives its own errors, plus RetryInfo)."""
    code = grpc.StatusCode[error.status]
    status = status_pb2.Status(code=code.value[0], message=error.message)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata()))
    retry = any_pb2.Any()
    retry.Pack(
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=error.retry_after))
    )
    status.details.extend([info, retry])
    rich = status_to_grpc(status)
    trailing = (*rich.trailing_metadata, ("retry-after", str(error.retry_after)))
    return rich.code, rich.details, trailing


async def abort_retry_later(error: RetryLater, context: grpc.aio.ServicerContext) -> None:
    code, message, trailing = refusal_status(error)
    context.set_trailing_metadata(trailing)
    await context.abort(code, message)


def with_event_id(response: StreamResponse, offset: int | None) -> StreamResponse:
    """`response` with its event's log offset in the event's metadata (None: not logged)."""
    kind = response.WhichOneof("payload")
    if offset is not None and kind is not None:
        getattr(response, kind).metadata[Meta.EVENT_ID] = str(offset)
    return response


async def _with_event_ids(responses: AsyncIterable[StreamResponse]) -> AsyncIterator[StreamResponse]:
    try:
        async for response in responses:
            state = _call_state.get()
            yield with_event_id(response, state.pop(OFFSET_KEY, None) if state is not None else None)
    finally:
        # A client that goes away must end the handler's stream (and its
        # event-log follower) now, not at garbage collection.
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            await aclose()


class RuntimeGrpcHandler(GrpcHandler):
    """The SDK's gRPC servicer; refusals answered with their own status code,
    streamed events stamped with their log offset."""

    async def abort_context(self, error: A2AError, context: grpc.aio.ServicerContext) -> None:
        if isinstance(error, RetryLater):
            await abort_retry_later(error, context)
        await super().abort_context(error, context)

    async def SendStreamingMessage(
        self, request: SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[StreamResponse]:
        stream = super().SendStreamingMessage(request, context)
        async for response in _with_event_ids(stream):
            yield response

    async def SubscribeToTask(
        self, request: SubscribeToTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[StreamResponse]:
        stream = super().SubscribeToTask(request, context)
        async for response in _with_event_ids(stream):
            yield response


class RuntimeCompatGrpcHandler(CompatGrpcHandler):
    """The SDK's A2A 0.3 gRPC servicer, refusals answered as above."""

    async def abort_context(self, error: A2AError, context: grpc.aio.ServicerContext) -> None:
        if isinstance(error, RetryLater):
            await abort_retry_later(error, context)
        await super().abort_context(error, context)


Abort = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def _refusing(handler: grpc.RpcMethodHandler, abort: Abort) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts the call."""
    if handler.unary_stream is not None:

        async def refuse_stream(_: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await abort(context)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def refuse(_: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context)

    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


# The 1.0 service's methods, and the versions it answers (major.minor).
SERVICE_1_0 = "/lf.a2a.v1.A2AService/"
SPOKEN_1_0 = ("1", "0")
VERSION_METADATA = "a2a-version"


def speaks(version: str) -> bool:
    """An `a2a-version` the 1.0 service answers: 1.0 (any patch)."""
    return tuple(version.strip().split(".")[:2]) == SPOKEN_1_0


async def _version_not_supported(version: str, context: grpc.aio.ServicerContext) -> None:
    error = VersionNotSupportedError(
        message=f"A2A version {version!r} is not supported by this service: it speaks 1.0 "
        "(and 0.3 on the a2a.v1.A2AService service, when on)"
    )
    status = status_pb2.Status(code=grpc.StatusCode.UNIMPLEMENTED.value[0], message=error.message)
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=A2A_ERROR_REASONS.get(VersionNotSupportedError, "VERSION_NOT_SUPPORTED"),
            domain="a2a-protocol.org",
        )
    )
    status.details.append(info)
    rich = status_to_grpc(status)
    context.set_trailing_metadata(rich.trailing_metadata)
    await context.abort(rich.code, rich.details)


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


async def _unauthenticated(context: grpc.aio.ServicerContext) -> None:
    # Says only that a credential is needed, never why one was refused.
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAIL)


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
                return _refusing(handler, _unauthenticated)
            _principal.set(principal)
        if self.rate is not None:
            try:
                self.rate.take(principal.owner if principal is not None else "")
            except RetryLater as refused:
                return _refusing(handler, functools.partial(abort_retry_later, refused))
        version = metadata.get(VERSION_METADATA, "")
        if version and details.method.startswith(SERVICE_1_0) and not speaks(version):
            return _refusing(handler, functools.partial(_version_not_supported, version))
        return handler


def _loopback(host: str) -> str:
    """Where this process reaches its own port (a wildcard address is not a destination)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class GrpcPortError(OSError):
    """The gRPC port cannot be opened (start-up stops, naming the setting)."""


class GrpcBinding:
    """The gRPC server: started before the HTTP port takes requests, stopped with it."""

    def __init__(
        self,
        settings: Settings,
        request_handler: RequestHandler,
        authenticator: Authenticator,
        rate: RequestRate | None,
    ) -> None:
        assert settings.grpc_port is not None
        self.settings = settings
        self.port = settings.grpc_port
        self.server = grpc.aio.server(
            interceptors=[GuardInterceptor(authenticator, rate)],
            options=[
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                # No send limit (gRPC's default, stated): a task may hold several
                # files of MOLECULE_MAX_FILE_BYTES; clients bound what they receive.
                ("grpc.max_send_message_length", -1),
                # A restarted process must not share its port with a lingering one.
                ("grpc.so_reuseport", 0),
            ],
        )
        builder = PrincipalContextBuilder()
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(
            RuntimeGrpcHandler(request_handler, context_builder=builder), self.server
        )
        if settings.a2a_v03_compat:
            a2a_v0_3_pb2_grpc.add_A2AServiceServicer_to_server(
                RuntimeCompatGrpcHandler(request_handler, context_builder=builder), self.server
            )
        self._probe: grpc.aio.Channel | None = None
        self._stopping: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.port}" if ":" in host and not host.startswith("[") else f"{host}:{self.port}"

    async def start(self) -> None:
        try:
            self.server.add_insecure_port(self.address)
        except RuntimeError:
            raise GrpcPortError(
                f"the gRPC binding cannot listen on {self.address} (MOLECULE_GRPC_PORT, HOST): "
                "the port is taken or the address is not this machine's"
            ) from None
        await self.server.start()
        self._probe = grpc.aio.insecure_channel(f"{_loopback(self.settings.host)}:{self.port}")

    def begin_stop(self) -> None:
        """At SIGTERM: no new calls; open ones (streams) get the shutdown grace."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(
                self.server.stop(max(0.0, self.settings.shutdown_grace - 1.0))
            )

    async def stop(self) -> None:
        self.begin_stop()
        assert self._stopping is not None
        await self._stopping
        if self._probe is not None:
            await self._probe.close()

    async def check(self) -> tuple[bool, str]:
        """For /readyz: the port accepts a connection from this process."""
        if self._stopping is not None:
            return False, "stopping"
        if self._probe is None:
            return False, "not started"
        try:
            await asyncio.wait_for(self._probe.channel_ready(), timeout=1.0)
        except (TimeoutError, grpc.aio.AioRpcError):
            return False, f"not accepting connections on port {self.port}"
        return True, f"serving on port {self.port}"


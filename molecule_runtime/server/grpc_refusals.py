"""gRPC answers to refused calls: rich statuses, and handlers that only refuse.

Refusals the request handler raises (`RetryLater`: server busy, too many
tasks) are not in the SDK's gRPC error table, which would answer `UNKNOWN`;
they are answered with their own status code, an `ErrorInfo` and a
`RetryInfo` detail, and `retry-after` trailing metadata. A call to the 1.0
service in an A2A version it does not speak is refused with
VersionNotSupportedError, whose gRPC status A2A gives as `UNIMPLEMENTED`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from a2a.utils.errors import A2A_ERROR_REASONS, VersionNotSupportedError
from a2a.utils.grpc_status import status_to_grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from molecule_runtime.refusals import RetryLater
from molecule_runtime.server.busy import DOMAIN

UNAUTHENTICATED_DETAIL = "send metadata authorization: Bearer <credential>"


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


async def version_not_supported(version: str, context: grpc.aio.ServicerContext) -> None:
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


async def unauthenticated(context: grpc.aio.ServicerContext) -> None:
    # Says only that a credential is needed, never why one was refused.
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAIL)


Abort = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def refusing(handler: grpc.RpcMethodHandler, abort: Abort) -> grpc.RpcMethodHandler:
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

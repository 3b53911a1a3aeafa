"""The A2A gRPC binding on its own port (MOLECULE_GRPC_PORT), next to the HTTP ones.

It serves the a2a-sdk's gRPC servicers (server/grpc_servicers.py) over the
*same* request handler as JSON-RPC and REST, so admission, per-principal task
limits, owner isolation, the task store, the event log and durable mode behave
exactly as on HTTP. What HTTP does in middleware is done by one server
interceptor (server/grpc_guard.py); the principal and the request metadata
reach the call context through server/grpc_calls.py; refusals are answered
with rich statuses (server/grpc_refusals.py). This module starts and stops
the server. The request size limit is gRPC's own receive limit, set to
MOLECULE_MAX_REQUEST_BYTES; what it sends is not limited (a task holds files
of up to MOLECULE_MAX_FILE_BYTES each).
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
from a2a.compat.v0_3 import a2a_v0_3_pb2_grpc
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import a2a_pb2_grpc

from molecule_runtime.config import Settings
from molecule_runtime.server.grpc_calls import PrincipalContextBuilder
from molecule_runtime.server.grpc_guard import GuardInterceptor
from molecule_runtime.server.grpc_servicers import RuntimeCompatGrpcHandler, RuntimeGrpcHandler
from molecule_runtime.server.principals import Authenticator
from molecule_runtime.server.quotas import RequestRate


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


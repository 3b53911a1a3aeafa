"""Process entry points: the A2A server and the worker-only process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from molecule_runtime.config import Settings
from molecule_runtime.observability.tracing import (
    SHUTDOWN_FLUSH_SECONDS,
    configure_tracing,
    shutdown_tracing,
)
from molecule_runtime.server.app import build_app
from molecule_runtime.server.header_timeout import http_protocol
from molecule_runtime.services import Services

log = logging.getLogger("molecule_runtime")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Past every bounded step of the shutdown (open requests, Temporal workers, the
# last spans), how long the process may still take before it is ended anyway.
EXIT_MARGIN = 10.0


def exit_deadline(settings: Settings) -> float:
    """Seconds after a stop signal by which the process is gone, whatever still runs."""
    grace = settings.shutdown_grace
    return grace + max(1.0, grace) + SHUTDOWN_FLUSH_SECONDS + EXIT_MARGIN


def end_by_deadline(settings: Settings) -> None:
    """From the stop signal on: a task that ignores cancellation, or a client
    library that waits for a peer that is gone, must not keep the process alive.
    Nothing is lost by then: durable attempts are Temporal's to retry, direct
    tasks were ended, and stored writes were flushed or are retried by the next
    process."""

    def end() -> None:
        log.warning(
            "shutdown did not finish within %.0f s of the stop signal; exiting now", exit_deadline(settings)
        )
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(exit_deadline(settings), end)
    timer.daemon = True
    timer.start()


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the stop signal after its graceful shutdown.

    uvicorn re-raises a captured SIGTERM once it has stopped serving, which kills
    the process before `Runtime.stop()` releases the adapter, the store and
    Temporal; here the signal only starts the shutdown and the process exits 0.
    """

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)


async def run_server(settings: Settings) -> int:
    tracing = configure_tracing("molecule-runtime")
    services: Services | None = None
    try:
        # Adapter, store and Temporal are set up before the port is bound, so a
        # broken configuration exits non-zero without ever accepting a request.
        services = await Services.open(settings, accept_tasks=True)
        app = build_app(services, tracing_enabled=tracing)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=int(settings.shutdown_grace) or None,
            access_log=False,
            # Slow clients: a deadline for the request headers (the body has its own).
            http=http_protocol(settings.request_timeout),
        )
        grpc = None
        if settings.grpc_port is not None:
            # Imported only when on (grpcio loads a native library).
            from molecule_runtime.server.grpc_server import GrpcBinding, GrpcPortError

            grpc = GrpcBinding(
                settings, app.state.request_handler, app.state.authenticator, app.state.request_rate
            )
            try:
                await grpc.start()
            except GrpcPortError as exc:
                log.error("cannot start: %s", exc)
                return 2
            services.listener_checks["grpc"] = grpc.check
            app.state.before_close.append(grpc.stop)

        def on_exit() -> None:
            end_by_deadline(settings)
            services.begin_drain()
            if grpc is not None:
                grpc.begin_stop()

        server = _Server(config, on_exit=on_exit)
        log.info(
            "molecule-runtime serving adapter=%s mode=%s store=%s address=http://%s:%s card=%s/.well-known/agent-card.json",
            services.adapter.name(),
            services.mode,
            services.stores.description,
            settings.host,
            settings.port,
            settings.resolved_public_url,
        )
        if grpc is not None:
            log.info("gRPC binding on %s, advertised as %s", grpc.address, settings.resolved_grpc_url)
        if settings.console:
            log.info("console: open %s/console in a browser", settings.resolved_public_url)
        try:
            await server.serve()
        finally:
            if grpc is not None:
                await grpc.stop()
        return 0 if server.started or not server.should_exit else 1
    finally:
        if services is not None:
            await services.close()
        _end_tracing(settings)


def _end_tracing(settings: Settings) -> None:
    # The last spans get the shutdown grace to leave, at most SHUTDOWN_FLUSH_SECONDS.
    shutdown_tracing(min(settings.shutdown_grace, SHUTDOWN_FLUSH_SECONDS))


async def run_worker(settings: Settings) -> int:
    if not settings.durable:
        log.error("the worker command needs durable mode: set TEMPORAL_HOST (host:port or 'embedded')")
        return 2
    configure_tracing("molecule-runtime-worker")
    services: Services | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        services = await Services.open(settings, accept_tasks=False)
        log.info(
            "molecule-runtime worker adapter=%s queue=%s namespace=%s",
            services.adapter.name(),
            settings.temporal_task_queue,
            settings.temporal_namespace,
        )
        await stop.wait()
        end_by_deadline(settings)
        return 0
    finally:
        if services is not None:
            await services.close()
        _end_tracing(settings)

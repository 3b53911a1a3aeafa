"""This process's connection to Temporal: the embedded dev server when asked,
connecting (`TEMPORAL_HOST` wins, Temporal's own env config supplies the rest),
and a supervisor that reconnects with back-off and keeps the workers running.

While Temporal is out of reach new tasks run directly (decided per task,
before anything runs); the supervisor switches them back when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfigProfile

from molecule_runtime.config import Settings
from molecule_runtime.durable.embedded import EmbeddedTemporal
from molecule_runtime.durable.worker import TaskWorkers
from molecule_runtime.observability import metrics
from molecule_runtime.observability.tracing import tracing_requested

log = logging.getLogger(__name__)
# How long a process waits for the embedded dev server it started to answer.
EMBEDDED_CONNECT_DEADLINE = 30.0


def _interceptors() -> list[Interceptor]:
    """Trace propagation through workflows and activities, when traces are exported:
    otherwise its spans go nowhere and it still runs at every call."""
    if not tracing_requested():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def connect_options(settings: Settings, target_host: str) -> dict[str, Any]:
    """Connect kwargs: TEMPORAL_ADDRESS / TEMPORAL_API_KEY / TLS / temporal.toml, then ours."""
    try:
        options: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    except Exception as exc:  # a broken temporal.toml must not hide TEMPORAL_HOST
        log.warning("ignoring Temporal env config: %s", exc)
        options = {}
    options["target_host"] = target_host
    options["namespace"] = settings.temporal_namespace
    return options


async def connect(
    settings: Settings, target_host: str, interceptors: list[Interceptor] | None = None
) -> Client:
    options = connect_options(settings, target_host)
    client = await Client.connect(**options, interceptors=interceptors or [], lazy=False)
    # Fail fast when the frontend is not really serving (connect can succeed early).
    await client.service_client.check_health(
        timeout=timedelta(seconds=settings.temporal_connect_timeout)
    )
    return client


class TemporalConnection:
    def __init__(self, settings: Settings, workers: TaskWorkers) -> None:
        self.settings = settings
        self.workers = workers
        self.client: Client | None = None
        self.target = settings.temporal_host or ""
        self.healthy = False
        self.last_error = ""
        self._embedded: EmbeddedTemporal | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self) -> None:
        """Connect, or note why not (tasks then run directly); supervise either way."""
        if self.settings.temporal_host == "embedded":
            self._embedded = EmbeddedTemporal(
                self.settings.data_dir.resolve() / "temporal",
                self.settings.temporal_namespace,
                ui_port=self.settings.temporal_ui_port,
            )
            self.target = await self._embedded.start()
        try:
            if self._embedded is not None:
                await self._connect_embedded()
            else:
                await self._connect()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "Temporal at %s is unreachable (%s): tasks run directly until it is back",
                self.target,
                self.last_error,
            )
        self._supervisor = asyncio.create_task(self._supervise(), name="temporal-supervisor")

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self.workers.stop()
        if self._embedded is not None:
            await self._embedded.stop()

    def set_healthy(self, healthy: bool, error: str = "") -> None:
        self.healthy = healthy
        if error:
            self.last_error = error
        metrics.TEMPORAL_CONNECTED.set(1 if healthy else 0)

    async def _connect(self) -> None:
        client = await asyncio.wait_for(
            connect(self.settings, self.target, interceptors=_interceptors()),
            timeout=self.settings.temporal_connect_timeout,
        )
        self.client = client
        self.workers.start(client)
        self.set_healthy(True)
        self.last_error = ""
        log.info(
            "durable mode: Temporal %s namespace=%s queues=%s",
            self.target,
            self.settings.temporal_namespace,
            ", ".join(self.workers.queues),
        )

    async def _connect_embedded(self) -> None:
        """Our own dev server opens its port before it answers (its namespace is
        registered after): on a busy machine the first connects fail for a few
        seconds, which must not start this process in direct mode."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EMBEDDED_CONNECT_DEADLINE
        while True:
            try:
                await self._connect()
                return
            except Exception as exc:
                embedded = self._embedded
                if loop.time() > deadline or (embedded is not None and not embedded.running()):
                    raise
                log.debug("embedded Temporal not answering yet: %s", exc)
                await asyncio.sleep(0.5)

    async def _healthy_now(self) -> bool:
        if self.client is None:
            return False
        try:
            return bool(
                await self.client.service_client.check_health(timeout=timedelta(seconds=2))
            )
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    async def _supervise(self) -> None:
        backoff = 1.0
        longest = self.settings.temporal_reconnect_max_interval
        while not self._closing:
            await asyncio.sleep(1.0 if self.healthy else backoff)
            if self.client is None:
                try:
                    await self._connect()
                    backoff = 1.0
                    log.info("Temporal is reachable again: new tasks run durably")
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    backoff = min(backoff * 2, longest)
                continue
            ok = await self._healthy_now()
            if ok and not self.healthy:
                log.info("Temporal is reachable again: new tasks run durably")
                backoff = 1.0
            elif not ok and self.healthy:
                log.warning("lost Temporal (%s): new tasks run directly until it is back", self.last_error)
            self.set_healthy(ok)
            if not ok:
                backoff = min(backoff * 2, longest)
            elif self.workers.stopped():
                await self.workers.stop()
                self.workers.start(self.client)

    @property
    def ui_url(self) -> str | None:
        """The embedded dev server's web UI, when it serves one (TEMPORAL_UI_PORT)."""
        return self._embedded.ui_url if self._embedded is not None else None

    def status(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "namespace": self.settings.temporal_namespace,
            "embedded": self._embedded is not None,
            "connected": self.healthy,
            "workers": self.workers.queues,
            "last_error": self.last_error,
        }

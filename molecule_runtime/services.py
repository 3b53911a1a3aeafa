"""What a process needs to run tasks — adapter, task store, push delivery, durable
mode — opened complete (before the port is bound) and closed in reverse order.
Shared by the server and the worker-only process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from molecule_runtime.adapters.base import AdapterConfig, BaseAdapter
from molecule_runtime.adapters.loader import resolve_adapter_class
from molecule_runtime.config import Settings
from molecule_runtime.execution.drain import stop_direct_after
from molecule_runtime.execution.run_settings import RunSettings
from molecule_runtime.observability.watchdog import LoopWatchdog
from molecule_runtime.push import PushNotifier
from molecule_runtime.recovery import sweep
from molecule_runtime.sdk_seam import queues_torn_down
from molecule_runtime.store import Stores, open_configured_stores
from molecule_runtime.vocabulary import ServiceMode

if TYPE_CHECKING:
    from molecule_runtime.durable.process import DurableProcess

log = logging.getLogger(__name__)


def handover_after(settings: Settings) -> float:
    """Seconds after SIGTERM when open streams end and tasks still followed here are
    handed over: below uvicorn's own graceful timeout, so the server exits in time."""
    return max(0.0, settings.shutdown_grace - 1.0)


class Services:
    def __init__(
        self,
        settings: Settings,
        adapter: BaseAdapter,
        stores: Stores,
        notifier: PushNotifier | None,
        durable: DurableProcess | None,
        run: RunSettings,
    ) -> None:
        self.settings = settings
        # How tasks run, in both modes (the durable ones were given the same).
        self.run = run
        self.adapter = adapter
        self.stores = stores
        self.notifier = notifier
        self.durable = durable
        # Set at SIGTERM/SIGINT: no new tasks here; running ones get the grace
        # period, then durable ones are handed back to Temporal.
        self.draining = asyncio.Event()
        self._sweep: asyncio.Task[None] | None = None
        self.sweep = "not started"  # the start-up sweep, as /readyz reports it
        self.watchdog = LoopWatchdog(adapter.name())
        # More listeners of this process (the gRPC port), each reported in
        # /readyz under its name: (ready, what it says).
        self.listener_checks: dict[str, Callable[[], Awaitable[tuple[bool, str]]]] = {}

    def begin_drain(self) -> None:
        # New tasks stay durable while draining: a request already on an open
        # connection can still arrive, and as a workflow it is handed over like
        # the running ones, where a direct run would be failed at shutdown.
        self.draining.set()
        queues_torn_down()
        if self.durable is not None:
            # Before open streams are closed (as direct runs are ended), requests
            # still following a workflow stop following it, so that their last
            # word (a stream's hand-over update, a blocking send's retryable
            # refusal) goes out while the connection is still open.
            asyncio.get_running_loop().call_later(
                stop_direct_after(handover_after(self.settings)), self.durable.tasks.handover.set
            )

    @classmethod
    async def open(cls, settings: Settings, *, accept_tasks: bool) -> Services:
        """Set everything up; raise (having released what was opened) if anything fails.

        `accept_tasks` is False for a worker-only process: it runs durable stages
        (shared queue) but takes no tasks of its own.
        """
        adapter = resolve_adapter_class(settings.adapter_module, settings.runtime)()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await adapter.setup(
            AdapterConfig(
                workspace_id=settings.workspace_id,
                data_dir=settings.data_dir.resolve(),
                model=settings.model,
                system_prompt=settings.system_prompt,
                options=dict(settings.adapter_options),
                task_store_url=settings.resolved_task_store_url,
            )
        )
        stores: Stores | None = None
        notifier: PushNotifier | None = None
        try:
            stores = await open_configured_stores(settings)
            if settings.push_notifications:
                # Told of every write, so headless ones (recovery, other replicas) notify too.
                notifier = PushNotifier(
                    stores.push_configs,
                    allow_private=settings.push_allow_private,
                    max_attempts=settings.push_max_attempts,
                    retry_initial_interval=settings.push_retry_initial_interval,
                    max_concurrent=settings.push_max_concurrent_deliveries,
                )
                stores.tasks.observe(notifier.notify)
            started_at = datetime.now(UTC).replace(tzinfo=None)
            run = RunSettings.of(settings)
            durable = None
            if settings.durable:
                from molecule_runtime.durable.process import DurableProcess

                durable = await DurableProcess(
                    settings,
                    adapter,
                    stores.tasks,
                    run=run,
                    accept_tasks=accept_tasks,
                    offsets=stores.live_offsets,
                ).open()
        except BaseException:
            await _close_quietly(adapter, stores, notifier)
            raise
        services = cls(settings, adapter, stores, notifier, durable, run)
        services.watchdog.start()
        if accept_tasks:
            services._sweep = asyncio.create_task(services._settle_orphans(started_at))
        return services

    async def _settle_orphans(self, started_at: datetime) -> None:
        """Finish or fail what this instance left unfinished when it last stopped."""
        start = None
        if self.durable is not None:
            # Durable tasks need Temporal: wait for it as long as it takes.
            delay, waited, told = 1.0, 0.0, 0.0
            while not self.durable.tasks.accepting():
                self.sweep = "waiting for Temporal"
                if waited - told >= 60 or not told:
                    told = waited or 1e-9
                    log.warning("start-up sweep waits for Temporal to settle unfinished tasks")
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 30.0)
            start = self.durable.tasks.starts.ensure_started
        self.sweep = "running"
        try:
            counts = await sweep(
                self.stores.tasks,
                self.settings.resolved_instance_id,
                started_at,
                start_workflow=start,
            )
        except Exception:
            self.sweep = "failed (see the log)"
            log.exception("could not settle the tasks left unfinished by the last run")
            return
        self.sweep = "done"
        if counts["failed_direct"] or counts["started"]:
            log.warning("tasks left unfinished by the last run: %s", counts)
        elif any(counts.values()):
            # Workflows that go on in Temporal: routine after a restart.
            log.info("tasks left unfinished by the last run: %s", counts)

    async def close(self) -> None:
        await self.watchdog.stop()
        if self._sweep is not None and not self._sweep.done():
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep
        if self.durable is not None:
            await self.durable.close()
        await _close_quietly(self.adapter, self.stores, self.notifier)

    @property
    def mode(self) -> ServiceMode:
        return ServiceMode.DIRECT if self.durable is None else self.durable.mode

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        body: dict[str, Any] = {
            "mode": self.mode,
            "adapter": self.adapter.name(),
            "adapter_ready": True,
            "workspace_id": self.settings.workspace_id,
        }
        ok = not self.draining.is_set()
        # A write, not only a connection: "cannot write: disk full" and the like.
        writable, body["store"] = await self.stores.write_status()
        ok = ok and writable
        if self.durable is not None:
            # Ready when the worker runs, or when the fallback to direct is active.
            body["temporal"] = self.durable.status()
        for name, check in self.listener_checks.items():
            listening, body[name] = await check()
            ok = ok and listening
        body["sweep"] = self.sweep
        body["status"] = (
            "draining" if self.draining.is_set() else "ready" if ok else "not ready"
        )
        return ok, body


async def _close_quietly(
    adapter: BaseAdapter, stores: Stores | None, notifier: PushNotifier | None
) -> None:
    try:
        await adapter.aclose()
    except Exception:
        log.exception("adapter aclose() failed")
    if notifier is not None:
        await notifier.aclose()
    if stores is not None:
        await stores.aclose()

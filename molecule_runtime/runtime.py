"""The runtime's lifecycle: adapter, task store, durable backend; shared by `serve` and `worker`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from molecule_runtime.adapters.base import AdapterConfig, BaseAdapter
from molecule_runtime.adapters.loader import resolve_adapter_class
from molecule_runtime.config import Settings
from molecule_runtime.push import PushNotifier
from molecule_runtime.recovery import sweep
from molecule_runtime.store import Stores, open_configured_stores

if TYPE_CHECKING:
    from molecule_runtime.durable.backend import DurableBackend

log = logging.getLogger(__name__)


class Runtime:
    """Everything a process needs to run tasks, started before the port is bound."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.adapter: BaseAdapter | None = None
        self.stores: Stores | None = None
        self.notifier: PushNotifier | None = None
        self.durable: DurableBackend | None = None
        self.adapter_ready = False
        self._sweep: asyncio.Task[None] | None = None

    async def start(self, *, serve_http: bool = True) -> None:
        settings = self.settings
        adapter_cls = resolve_adapter_class(settings.adapter_module, settings.runtime)
        self.adapter = adapter_cls()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.adapter.setup(
            AdapterConfig(
                workspace_id=settings.workspace_id,
                data_dir=settings.data_dir.resolve(),
                model=settings.model,
                system_prompt=settings.system_prompt,
                options=dict(settings.adapter_options),
            )
        )
        self.adapter_ready = True
        self.stores = await open_configured_stores(settings)
        if settings.push_notifications:
            # Told of every write, so headless ones (recovery, other replicas) notify too.
            self.notifier = PushNotifier(
                self.stores.push_configs,
                allow_private=settings.push_allow_private,
                max_attempts=settings.push_max_attempts,
                retry_initial_interval=settings.push_retry_initial_interval,
            )
            self.stores.tasks.observe(self.notifier.notify)
        started_at = datetime.now(UTC).replace(tzinfo=None)
        if settings.durable:
            from molecule_runtime.durable.backend import DurableBackend

            self.durable = DurableBackend(
                settings, self.adapter, self.stores, accept_tasks=serve_http
            )
            await self.durable.start()
        if serve_http:
            self._sweep = asyncio.create_task(self._settle_orphans(started_at))

    async def _settle_orphans(self, started_at: datetime) -> None:
        """Finish or fail what this instance left unfinished when it last stopped."""
        assert self.stores is not None
        durable = self.durable
        start = None
        if durable is not None:
            # Temporal may still be unreachable: wait (bounded) for the worker.
            for _ in range(60):
                if durable.accepting():
                    start = durable.ensure_started
                    break
                await asyncio.sleep(1)
        try:
            counts = await sweep(
                self.stores.tasks,
                self.settings.resolved_instance_id,
                started_at,
                start_workflow=start,
            )
        except Exception:
            log.exception("could not settle the tasks left unfinished by the last run")
            return
        if any(counts.values()):
            log.warning("tasks left unfinished by the last run: %s", counts)

    async def stop(self) -> None:
        if self._sweep is not None and not self._sweep.done():
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep
        if self.durable is not None:
            await self.durable.stop()
        if self.adapter is not None and self.adapter_ready:
            try:
                await self.adapter.aclose()
            except Exception:
                log.exception("adapter aclose() failed")
        if self.notifier is not None:
            await self.notifier.aclose()
        if self.stores is not None:
            await self.stores.aclose()

    @property
    def mode(self) -> str:
        if self.durable is None:
            return "direct"
        return self.durable.mode

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        body: dict[str, Any] = {
            "mode": self.mode,
            "adapter": self.adapter.name() if self.adapter else None,
            "adapter_ready": self.adapter_ready,
            "workspace_id": self.settings.workspace_id,
        }
        ok = self.adapter_ready
        try:
            assert self.stores is not None
            await self.stores.check()
            body["store"] = "ok"
        except Exception as exc:
            body["store"] = f"unreachable: {type(exc).__name__}"
            ok = False
        if self.durable is not None:
            body["temporal"] = self.durable.status()
            ok = ok and self.durable.ready()
        body["status"] = "ready" if ok else "not ready"
        return ok, body

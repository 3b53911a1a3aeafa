"""The runtime's lifecycle: adapter, task store, durable backend; shared by `serve` and `worker`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from molecule_runtime.adapters.base import AdapterConfig, BaseAdapter
from molecule_runtime.adapters.loader import resolve_adapter_class
from molecule_runtime.config import Settings
from molecule_runtime.store import Stores, open_stores, store_options

if TYPE_CHECKING:
    from molecule_runtime.durable.backend import DurableBackend

log = logging.getLogger(__name__)


class Runtime:
    """Everything a process needs to run tasks, started before the port is bound."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.adapter: BaseAdapter | None = None
        self.stores: Stores | None = None
        self.durable: DurableBackend | None = None
        self.adapter_ready = False

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
        self.stores = await open_stores(
            settings.resolved_task_store_url, store_options(settings)
        )
        if settings.durable:
            from molecule_runtime.durable.backend import DurableBackend

            self.durable = DurableBackend(
                settings, self.adapter, self.stores, accept_tasks=serve_http
            )
            await self.durable.start()

    async def stop(self) -> None:
        if self.durable is not None:
            await self.durable.stop()
        if self.adapter is not None and self.adapter_ready:
            try:
                await self.adapter.aclose()
            except Exception:
                log.exception("adapter aclose() failed")
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

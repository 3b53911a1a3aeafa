"""Notices when the event loop stalls: an adapter doing blocking work (a sync HTTP
call, CPU-heavy code without `asyncio.to_thread`) freezes every stream, heartbeat
and request of the process, and can make Temporal think the process died."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from molecule_runtime.observability import metrics

log = logging.getLogger(__name__)

TICK = 0.1
STALL = 1.0  # seconds the loop may be late before it counts as a stall


class LoopLoad:
    """How late the event loop runs (seconds, smoothed): the streams' batching
    widens its window by this much, so a busy process sends fewer, larger events."""

    lag = 0.0

    @classmethod
    def note(cls, late: float) -> None:
        cls.lag = 0.7 * cls.lag + 0.3 * max(0.0, late)


class LoopWatchdog:
    def __init__(self, adapter_name: str) -> None:
        self.adapter_name = adapter_name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="loop-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK)
            late = time.monotonic() - before - TICK
            LoopLoad.note(late)
            if late > STALL:
                metrics.LOOP_STALLS.labels(self.adapter_name).inc()
                metrics.LOOP_STALL_SECONDS.labels(self.adapter_name).inc(late)
                log.warning(
                    "the event loop was blocked for %.1f s (adapter %r?): streams, heartbeats "
                    "and requests all waited; move blocking work to asyncio.to_thread()",
                    late,
                    self.adapter_name,
                )

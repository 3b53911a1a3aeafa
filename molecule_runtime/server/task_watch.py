"""Waiting for a task to change: woken at once by this process's writes to the
store, and re-reading it every `POLL_INTERVAL` for writes of other replicas."""

from __future__ import annotations

import asyncio
import contextlib

from molecule_runtime.store import ObservedTaskStore

# How often a wait for a task of another replica re-reads the store.
POLL_INTERVAL = 0.25


class TaskWatch:
    """Waiters per task id, woken by the store's write observer."""

    def __init__(self, store: ObservedTaskStore) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        store.observe(self._wake)

    def _wake(self, task_id: str, _event: object = None, _version: object = None) -> None:
        for waiter in self._waiters.get(task_id, ()):
            waiter.set()

    async def changed(self, task_id: str, timeout: float = POLL_INTERVAL) -> None:
        """Return after a write to `task_id` in this process, or after `timeout`."""
        waiter = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout)
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[task_id]

"""CancelTask of a task whose adapter runs elsewhere (recovered headless after a
crash, on another worker): its workflow is cancelled too.

The SDK calls the executor's `cancel()` only for tasks whose stream lives in
this process; for the others it just records CANCELED in the store, which
would leave the workflow (and the adapter) running."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from a2a.server.context import ServerCallContext

from molecule_runtime.states import TERMINAL_STATES
from molecule_runtime.store import ObservedTaskStore

if TYPE_CHECKING:
    from molecule_runtime.durable.client import DurableTasks


class RemoteCancel:
    def __init__(
        self,
        store: ObservedTaskStore,
        durable: DurableTasks | None,
        runs_here: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.store = store
        self.durable = durable
        self.runs_here = runs_here

    async def __call__(self, task_id: str, context: ServerCallContext) -> None:
        """Before the SDK's CancelTask: cancel the workflow of a task not running here."""
        if self.durable is None or not task_id:
            return
        # Owner-scoped read first: only a caller who may see the task may cancel it.
        stored = await self.store.get(task_id, context)
        running_here = await self.runs_here(task_id)
        if (
            stored is not None
            and stored.task.status.state not in TERMINAL_STATES
            and not running_here
        ):
            await self.durable.cancel(task_id)

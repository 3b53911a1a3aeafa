"""Headless events: when no client stream is open in this process (crash recovery,
another replica), events are applied to the task store directly. Subscribers
anywhere follow them through the store's event log."""

from __future__ import annotations

import functools

from a2a.server.cluster import ConcurrentTaskModificationError, VersionedTaskStore
from a2a.server.tasks.task_manager import TaskManager
from a2a.types.a2a_pb2 import Task, TaskState

from molecule_runtime.execution.events import TaskEvents, TaskStopped
from molecule_runtime.states import TERMINAL_STATES
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.failures import is_transient
from molecule_runtime.store.health import until_stored
from molecule_runtime.store.owners import runtime_context


class TaskFinishedElsewhere(TaskStopped):
    """The stored task reached a terminal state (e.g. canceled) while we worked on it."""


def headless_events(
    store: VersionedTaskStore, task_id: str, context_id: str, artifact_id: str = ""
) -> TaskEvents:
    manager = TaskManager(
        task_store=store,
        # Acts as the task's owner (looked up by the store): tasks are owner-scoped.
        context=runtime_context(),
        task_id=task_id,
        context_id=context_id,
        initial_message=None,
    )

    health = getattr(store, "health", None)

    async def process(event: object) -> None:
        try:
            await manager.process(event)  # type: ignore[arg-type]
        except Exception as exc:
            if is_transient(exc):
                manager.invalidate()  # read the task again once the store is back
            raise

    async def deliver(event: object) -> None:
        for _ in range(5):
            try:
                # A store that is away for now is waited for (store/health.py).
                await until_stored(functools.partial(process, event), health)
                return
            except ConcurrentTaskModificationError:
                # Someone else wrote the task (e.g. CancelTask): re-read and decide.
                manager.invalidate()
                current = await manager.get_task()
                if current is not None and current.status.state in TERMINAL_STATES:
                    raise TaskFinishedElsewhere(
                        f"task {task_id} is already {TaskState.Name(current.status.state)}"
                    ) from None
        raise ConcurrentTaskModificationError(task_id)

    async def persisted() -> None:
        if isinstance(store, ObservedTaskStore):
            await store.wait_stored(task_id)

    async def stored_artifacts() -> dict[str, str]:
        task = await manager.get_task()
        return {a.artifact_id: a.name for a in task.artifacts} if task is not None else {}

    events = TaskEvents(task_id, context_id, deliver, artifact_id or None, persisted=persisted)
    events.stored_artifacts = stored_artifacts
    # What a retry continues, where the step journal cannot read it (memory store).
    events.stored_task = functools.partial(stored_task, store, task_id)
    if isinstance(store, ObservedTaskStore):
        events.steps = store.steps
    return events


async def stored_task(store: VersionedTaskStore, task_id: str) -> Task | None:
    stored = await store.get(task_id, runtime_context())
    return stored.task if stored is not None else None

"""The task store every writer goes through: compact answers, observers told of every event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from a2a.server.cluster import StoredTask, TaskVersion, VersionedTaskStore
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.owner_resolver import resolve_user_scope
from a2a.types.a2a_pb2 import (
    ListTasksRequest,
    ListTasksResponse,
    Part,
    Task,
    TaskArtifactUpdateEvent,
)

from molecule_runtime.store.group_commit import GroupCommitTaskStore
from molecule_runtime.store.health import StoreHealth, refusing
from molecule_runtime.store.owners import TaskOwners, acting_for, is_runtime
from molecule_runtime.store.steps import StepStore

log = logging.getLogger(__name__)

# Called after a write that recorded `event`: (task id, event, new version).
WriteObserver = Callable[[str, Any, TaskVersion], None]


def _plain_text(part: Part) -> bool:
    return (
        part.WhichOneof("content") == "text"
        and not part.metadata.fields
        and not part.filename
        and not part.media_type
    )


def merge_appended_text(task: Task, event: TaskArtifactUpdateEvent) -> None:
    """Merge the text parts an append just added into the artifact's last text part.

    The SDK appends every streamed chunk as another Part, so a stored answer
    would have one part per chunk and every write would carry all of them.
    Streamed events keep A2A's append semantics; only the snapshot is compacted.
    """
    if not event.append:
        return
    for artifact in task.artifacts:
        if artifact.artifact_id != event.artifact.artifact_id:
            continue
        parts = artifact.parts
        while len(parts) >= 2 and _plain_text(parts[-1]) and _plain_text(parts[-2]):
            parts[-2].text += parts[-1].text
            del parts[-1]
        return


class ObservedTaskStore(VersionedTaskStore):
    """The task store, telling this process's observers about every event it records.

    Every writer goes through it: the SDK's request handler (live streams,
    CancelTask) and the runtime's own writes (headless recovery after a crash,
    stages of tasks whose client stream is in another process). So push
    notifications, live stream offsets and subscriber wake-ups see every event,
    whoever wrote it.
    """

    def __init__(
        self,
        inner: VersionedTaskStore,
        owners: TaskOwners | None = None,
        steps: StepStore | None = None,
    ) -> None:
        self.inner = inner
        self._observers: list[WriteObserver] = []
        self.owners = owners or TaskOwners()
        # The adapters' step journal, in the same database as the tasks.
        self.steps = steps or StepStore()

    async def as_owner(self, task_id: str, context: ServerCallContext) -> ServerCallContext:
        """A runtime-internal call (store/owners.py) acts as the task's owner."""
        if not is_runtime(context):
            return context
        owner = await self.owners.owner_of(task_id)
        return acting_for(owner) if owner is not None else context

    @property
    def health(self) -> StoreHealth | None:
        """Whether the database takes writes now (None: the memory store)."""
        return self.inner.health if isinstance(self.inner, GroupCommitTaskStore) else None

    def observe(self, observer: WriteObserver) -> None:
        self._observers.append(observer)

    async def save(
        self,
        task: Task,
        *,
        event: Event | None = None,
        prev: Task | None = None,
        prev_version: TaskVersion,
        context: ServerCallContext,
    ) -> TaskVersion:
        if isinstance(event, TaskArtifactUpdateEvent):
            # In place: the SDK keeps this object as its current task, so it
            # stays compact for every later event and copy.
            merge_appended_text(task, event)
        # Writes wait out an outage (store/group_commit.py); a read that fails
        # for now is a retryable refusal (store/health.py), never the driver's text.
        with refusing(self.health):
            context = await self.as_owner(task.id, context)
            version = await self.inner.save(
                task, event=event, prev=prev, prev_version=prev_version, context=context
            )
        self.owners.remember(task.id, resolve_user_scope(context))
        if isinstance(event, TaskArtifactUpdateEvent) and self.steps.writes_ahead(task.id):
            # Write-ahead streaming (store/steps.py): the SDK's consumer streams
            # an event only after its save returns, so holding the chunk here
            # until it is committed means no client is sent what a crash could
            # lose. Chunks arriving meanwhile merge into the next event.
            await self.wait_stored(task.id)
        if event is not None:
            for observer in self._observers:
                try:
                    observer(task.id, event, version)
                except Exception:
                    # Observers are best-effort; the write itself succeeded.
                    log.exception("task store observer failed for task %s", task.id)
        return version

    async def get(self, task_id: str, context: ServerCallContext) -> StoredTask | None:
        with refusing(self.health):
            return await self.inner.get(task_id, await self.as_owner(task_id, context))

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        with refusing(self.health):
            return await self._list(params, context)

    async def _list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        if not is_runtime(context):
            return await self.inner.list(params, context)
        # The runtime's own listing (the start-up sweep) spans every owner, in
        # one page: each owner's pages are read to the end.
        everything = ListTasksResponse()
        for owner in await self.owners.owners():
            page_params = ListTasksRequest()
            page_params.CopyFrom(params)
            page_params.page_token = ""
            while True:
                page = await self.inner.list(page_params, acting_for(owner))
                for task in page.tasks:
                    self.owners.remember(task.id, owner)
                everything.tasks.extend(page.tasks)
                if not page.next_page_token:
                    break
                page_params.page_token = page.next_page_token
        everything.total_size = len(everything.tasks)
        return everything

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        with refusing(self.health):
            await self.inner.delete(task_id, await self.as_owner(task_id, context))

    async def wait_stored(self, task_id: str) -> None:
        """Return once every write to `task_id` so far is durable (at once for memory)."""
        if isinstance(self.inner, GroupCommitTaskStore):
            await self.inner.wait_stored(task_id)

    def expect_new(self, task_id: str) -> None:
        """`task_id` was just made up for a new task (see GroupCommitTaskStore.expect_new)."""
        if isinstance(self.inner, GroupCommitTaskStore):
            self.inner.expect_new(task_id)

    def unstored_events(self, task_id: str, after: int) -> list[tuple[int, bytes]]:
        """Events above `after` written here but not stored yet (write-behind);
        none of a task streaming write-ahead, whose readers get stored events only."""
        if isinstance(self.inner, GroupCommitTaskStore) and not self.steps.writes_ahead(task_id):
            return self.inner.unstored_events(task_id, after)
        return []

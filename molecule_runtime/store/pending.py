"""What this process wrote to one task and the database does not have yet, and
how a commit's outcome settles it (store/group_commit.py hands the writes out,
store/committer.py commits them)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from a2a.types.a2a_pb2 import Task, TaskState

from molecule_runtime.states import TERMINAL_STATE_NAMES
from molecule_runtime.store.task_writes import PendingWrite, RowCache, task_row

_WORKING = TaskState.Name(TaskState.TASK_STATE_WORKING)


class TaskNotStored(RuntimeError):
    """A task's write the database rejected for good: the task fails, not the others."""

    def __init__(self, task_id: str, cause: Exception) -> None:
        super().__init__(
            f"The task could not be stored: the database rejected its data for good "
            f"({type(cause).__name__}, logged by the server), which retrying cannot mend. "
            "Other tasks are not affected."
        )
        self.task_id = task_id


@dataclass
class PendingTask:
    """What this process wrote to one task and the database does not have yet."""

    owner: str
    stored: int  # the version the database holds (0: the task is not there yet)
    version: int  # the last version handed out
    snapshot: Task | None = None  # the task at `version`, while it is ahead of `stored`
    events: list[tuple[int, bytes]] = field(default_factory=list)
    cancel: bool = False  # a pending write cancels the task
    waiters: list[tuple[int, asyncio.Future[int]]] = field(default_factory=list)
    error: Exception | None = None
    touched: float = field(default_factory=time.monotonic)
    row_cache: RowCache = field(default_factory=dict)
    # Versions a commit tried to store when the database dropped the connection:
    # the commit may have gone through nonetheless.
    tried: set[int] = field(default_factory=set)

    @property
    def dirty(self) -> bool:
        return self.version > self.stored and self.error is None

    def write(self, task_id: str) -> PendingWrite:
        """Everything pending, as one write of the task's row and events."""
        assert self.snapshot is not None
        return PendingWrite(
            task_id,
            self.owner,
            expect=self.stored,
            upto=self.version,
            row=task_row(self.snapshot, self.owner, self.row_cache),
            events=list(self.events),
            cancel=self.cancel,
        )

    def settle(self, item: PendingWrite, outcome: int | Exception) -> bool:
        """The outcome of committing `item`: the version stored, or why it failed.

        True when nothing more will be written to the task (it can be forgotten).
        """
        if isinstance(outcome, Exception):
            self.error = outcome
            self.events.clear()
            self.snapshot = None
            for _, future in self.waiters:
                if not future.done():
                    future.set_exception(outcome)
            self.waiters.clear()
            return False
        self.stored = outcome
        self.version = max(self.version, outcome)
        self.tried = {v for v in self.tried if v > outcome}
        stored_upto = item.upto
        self.events = [(v, d) for v, d in self.events if v > stored_upto]
        if item.cancel and outcome != item.upto:
            self.events.clear()
        if self.version == self.stored:
            self.snapshot = None
            self.cancel = False
        remaining = []
        for version, future in self.waiters:
            if future.done():
                continue
            if version <= stored_upto:
                future.set_result(outcome if version == stored_upto else version)
            else:
                remaining.append((version, future))
        self.waiters = remaining
        status = item.row.get("status")
        state = status.get("state") if isinstance(status, dict) else None
        if state != _WORKING:
            # Only a working task is written again soon: a waiting one keeps no copies.
            self.row_cache.clear()
        # Nothing is written after a terminal state.
        return bool(self.stored) and self.version == self.stored and state in TERMINAL_STATE_NAMES

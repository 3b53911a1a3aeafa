"""The client side of a durable task: start (or join) its workflow, follow it to its
end or to a question, hand it the user's answer, cancel it.

A task runs durably or directly, decided *before* anything runs: if Temporal
refused the start outright the task may run directly; once a start may have
been accepted the task is never also run directly. Starting the workflow is
durable/starts.py, following it to its end (or its question) durable/follow.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

from a2a.server.cluster import VersionedTaskStore
from temporalio.client import (
    Client,
    RPCError,
    RPCTimeoutOrCancelledError,
    WorkflowHandle,
)

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.config import Settings
from molecule_runtime.durable.connection import TemporalConnection
from molecule_runtime.durable.early import MIN_WINDOW, EarlyAttempt
from molecule_runtime.durable.follow import WorkflowFollower
from molecule_runtime.durable.peers import WorkflowPeers
from molecule_runtime.durable.registry import LiveTask, LiveTaskRegistry, until_any
from molecule_runtime.durable.starts import UNREACHABLE, StartRefused, WorkflowStarts
from molecule_runtime.durable.types import (
    PROVIDE_INPUT_SIGNAL,
    InputReply,
    TaskRef,
)
from molecule_runtime.durable.watch import LlmCallWatch
from molecule_runtime.durable.worker import worker_identity
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.sdk_seam import started_eagerly
from molecule_runtime.states import state_of
from molecule_runtime.store import LiveEventOffsets
from molecule_runtime.vocabulary import Outcome

BeginEarly = Callable[
    [TaskEvents, Callable[[], Awaitable[TaskInput]], float, bool, LlmCallWatch], EarlyAttempt
]

# How long CancelTask waits for a workflow being started, then for the adapter to stop.
CANCEL_WAIT = 10.0


class DurableTasks:
    def __init__(
        self,
        settings: Settings,
        connection: TemporalConnection,
        registry: LiveTaskRegistry,
        *,
        accept_tasks: bool,
        store: VersionedTaskStore | None = None,
        offsets: LiveEventOffsets | None = None,
        begin_early: BeginEarly | None = None,
    ) -> None:
        self.settings = settings
        # Begins a new task's first attempt while its workflow starts (durable/early.py).
        self.begin_early = begin_early
        # Where a question asked by another process shows (None: one process only),
        # and the log offsets of what this process streams, for relaying it.
        self.store = store
        self.offsets = offsets
        self.connection = connection
        self.registry = registry
        self.accept_tasks = accept_tasks
        self.fallbacks = 0
        # Set when this process hands its tasks over at shutdown: requests stop
        # following their workflows (which go on elsewhere) and are answered.
        self.handover = asyncio.Event()
        self.starts = WorkflowStarts(settings, connection, self.handover)
        peers = WorkflowPeers(
            lambda: connection.client,
            settings.temporal_namespace,
            settings.temporal_task_queue,
            worker_identity(settings),
        )
        self._identity = worker_identity(settings)
        self._follower = WorkflowFollower(settings, peers, self.handover, store=store, offsets=offsets)

    def accepting(self) -> bool:
        """True when new tasks should run on Temporal."""
        c = self.connection
        return self.accept_tasks and c.healthy and c.client is not None

    def _handle(self, client: Client, task_id: str) -> WorkflowHandle:
        return self.starts.handle(client, task_id)

    async def run(
        self,
        ref: TaskRef,
        events: TaskEvents,
        first_input: Callable[[], Awaitable[TaskInput]] | None = None,
    ) -> bool:
        """Run the task as a workflow; False if Temporal refused it before anything ran.

        The task, with the user's message, must be committed to the task store
        (dispatch waits for it): the workflow carries ids only. With
        `first_input` (the request's input), the first attempt begins as soon
        as Temporal has accepted the workflow.
        """
        client = self.connection.client
        if client is None:
            self.fallbacks += 1
            return False
        with self.registry.register(events) as entry:
            accepted = None
            if (
                first_input is not None
                and self.begin_early is not None
                and self.settings.temporal_schedule_to_start_timeout >= MIN_WINDOW
            ):
                begin = self.begin_early
                deadline = self.settings.temporal_schedule_to_start_timeout

                def accepted() -> None:
                    watch = LlmCallWatch(
                        entry.handle,
                        self.settings.process_task_queue,
                        self._identity,
                        deadline,
                        client=client,
                        heartbeat_timeout=self.settings.temporal_heartbeat_timeout,
                    )
                    entry.early = begin(events, first_input, deadline, started_eagerly(entry.handle), watch)

            try:
                handle = await self.starts.start_here(client, ref, events, entry, accepted)
            except StartRefused:
                self.fallbacks += 1
                return False
            try:
                if handle is None:
                    return True  # started for the processes that stay
                await self._follower.follow(handle, events)
                return True
            finally:
                if entry.early is not None:
                    # The workflow ended, or this process hands it over, without
                    # llm_call taking it: it stops (the journal keeps what it wrote).
                    await entry.early.drop()

    async def resume(self, ref: TaskRef, events: TaskEvents) -> bool:
        """Hand the user's answer to a task waiting for input; follow the new turn here.

        The answer must be stored (the turn's `working` event) before: the
        signal names it by id. False if Temporal cannot be reached (nothing was sent).
        """
        client = self.connection.client
        if client is None or not self.connection.healthy:
            return False
        handle = self._handle(client, ref.task_id)
        reply = InputReply(
            ref=ref, process_queue=self.settings.process_task_queue, artifact_id=events.artifact_id
        )
        with self.registry.register(events) as entry:
            entry.attach(handle)
            try:
                await handle.signal(
                    PROVIDE_INPUT_SIGNAL,
                    reply,
                    rpc_timeout=timedelta(seconds=self.settings.temporal_connect_timeout),
                )
            except RPCError as exc:
                if exc.status in UNREACHABLE:
                    self.connection.set_healthy(False, f"signal: {exc}")
                    return False
                # The workflow is gone (finished, timed out waiting): the task cannot go on.
                await events.status(
                    state_of(Outcome.FAILED),
                    f"This task no longer accepts answers ({exc.message}).",
                )
                return True
            except RPCTimeoutOrCancelledError:
                return False
            await self._follower.follow(handle, events)
            return True

    async def _cancel_quietly(self, handle: WorkflowHandle) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(handle.cancel()), timeout=2)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task's workflow and wait (bounded) until the adapter has stopped."""
        entry: LiveTask | None = self.registry.get(task_id)
        if entry is not None:
            # An early attempt is not stopped here: the cancel reaches it through
            # llm_call (canceled) or the workflow's end (never taken).
            entry.cancel_requested.set()
            if entry.handle is None:
                # Its workflow is being started here: cancel it once Temporal has it,
                # so that the stream here ends with the outcome and nothing runs after.
                await until_any((entry.accepted, entry.finished), CANCEL_WAIT)
        if entry is not None and entry.handle is not None:
            await self._cancel_quietly(entry.handle)
            # The adapter sees CancelledError at its next heartbeat reply.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.finished.wait(), timeout=CANCEL_WAIT)
            return True
        client = self.connection.client
        if client is None:
            return False
        try:
            await self._handle(client, task_id).cancel()
        except Exception:
            return False
        return True

"""Following a task's workflow from the request that started (or answered) it:
until the workflow ends, stops to wait for the user's input, asks its question
from another process, or this process hands its tasks over at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from a2a.server.cluster import StoredTask, VersionedTaskStore
from a2a.types.a2a_pb2 import TaskState
from temporalio.client import (
    RPCError,
    RPCTimeoutOrCancelledError,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import CancelledError

from molecule_runtime.config import Settings
from molecule_runtime.durable.peers import WorkflowPeers
from molecule_runtime.durable.types import TaskOutcome
from molecule_runtime.durable.workflow import root_message
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.states import state_of
from molecule_runtime.store import LiveEventOffsets
from molecule_runtime.store.owners import runtime_context
from molecule_runtime.vocabulary import Meta, Outcome

# Logged under the client's name, as operators know it.
log = logging.getLogger("molecule_runtime.durable.client")

# How often a followed task's stored state is read while no chunk streams
# here: a question stored by another process reaches the client within this.
ELSEWHERE_POLL = 0.25

# The last event of a stream whose task this process hands over at shutdown: a
# status update that is not terminal (the task goes on) and says what to do. A
# plain status update, not an error, because every client shows one as it is
# (a2a-sdk, the JS SDK, ADK, the console); the metadata says it to programs.
HANDED_OVER = "molecule.handed_over"
HANDED_OVER_REASON = "SERVER_SHUTTING_DOWN"
HANDED_OVER_RETRY_AFTER = 1
HANDED_OVER_TEXT = (
    "This server is shutting down; the task goes on (another replica, or this server "
    "after its restart, finishes it). Follow it with SubscribeToTask, on any replica, "
    "sending the last event id you received as Last-Event-ID; GetTask shows its state."
)


class WorkflowFollower:
    def __init__(
        self,
        settings: Settings,
        peers: WorkflowPeers,
        handover: asyncio.Event,
        *,
        store: VersionedTaskStore | None,
        offsets: LiveEventOffsets | None,
    ) -> None:
        self.settings = settings
        self._peers = peers
        # Set when this process hands its tasks over at shutdown (DurableTasks.handover).
        self.handover = handover
        # Where a question asked by another process shows (None: one process only),
        # and the log offsets of what this process streams, for relaying it.
        self.store = store
        self.offsets = offsets

    async def follow(self, handle: WorkflowHandle, events: TaskEvents) -> None:
        """Stream until the workflow ends or stops to wait for the user's input."""
        result = asyncio.ensure_future(self._result(handle))
        paused = asyncio.ensure_future(events.input_required.wait())
        elsewhere = asyncio.ensure_future(self._asked_elsewhere(events))
        handover = asyncio.ensure_future(self.handover.wait())
        waits = (result, paused, elsewhere, handover)
        try:
            # Cancelled here is not a cancel of the task: CancelTask reaches the
            # workflow through cancel(), and at shutdown the workflow must go on
            # (another worker, or this process after a restart, finishes it).
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waits:
                if not future.done():
                    future.cancel()
        if handover.done() and not (result.done() or paused.done() or elsewhere.done()):
            log.debug("task %s: handed over to Temporal at shutdown; it finishes elsewhere", events.task_id)
            await self._tell_handed_over(events)
            return
        if elsewhere.done() and not elsewhere.cancelled() and not events.input_required.is_set():
            # The question was stored by the process that ran the workflow's
            # task_complete: this stream ends with it, as if asked here.
            stored = elsewhere.result()
            log.info("task %s: question stored by another process, relayed to this stream", events.task_id)
            if self.offsets is not None:
                self.offsets.record(events.task_id, stored.task, stored.version)
            await events.relay(stored.task)
            return
        if not result.done() or result.cancelled():
            return  # waiting for input: the workflow goes on without this request
        outcome = result.result()
        if events.terminal_state is None and not events.input_required.is_set():
            # task_complete ran on another worker, or Temporal is out of
            # reach; the client's stream still ends with a final state.
            await events.status(
                state_of(outcome.state),
                outcome.message or None,
                metadata={Meta.LOST_CONTACT: True} if outcome.state == Outcome.LOST else None,
            )

    async def _tell_handed_over(self, events: TaskEvents) -> None:
        """The stream's last event: the task goes on elsewhere, follow it there."""
        if events.terminal_state is not None or events.input_required.is_set():
            return
        try:
            await events.status(
                TaskState.TASK_STATE_WORKING,
                HANDED_OVER_TEXT,
                metadata={
                    HANDED_OVER: {
                        "reason": HANDED_OVER_REASON,
                        "retryAfterSeconds": HANDED_OVER_RETRY_AFTER,
                    }
                },
            )
        except Exception as exc:  # the stream is closed already: nobody to tell
            log.debug("task %s: could not tell its stream of the hand-over: %s", events.task_id, exc)

    async def _asked_elsewhere(self, events: TaskEvents) -> StoredTask:
        """The stored task once another process stored a question for it.

        The workflow's `task_complete`, which stores the question, is a local
        activity: it runs in whichever process holds the workflow, maybe not
        this one. Checked while no chunk streams here, from the task store.
        """
        if self.store is None:
            await asyncio.Event().wait()  # an in-memory store serves one process
        assert self.store is not None
        # Once this stream's own events are stored, a question in the store is
        # one asked after them (an answer's turn starts with `working`).
        with contextlib.suppress(Exception):
            await events.persisted()
        streamed = -1
        while True:
            # Alone on the workflow queue, this process asks every question itself.
            if events.chunks_sent == streamed and await self._peers.others_poll():
                try:
                    stored = await self.store.get(events.task_id, runtime_context())
                except Exception as exc:  # the store is busy: the workflow's end still counts
                    log.debug("task %s: could not read its state: %s", events.task_id, exc)
                    stored = None
                if stored is not None and stored.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED:
                    return stored
            streamed = events.chunks_sent
            await asyncio.sleep(ELSEWHERE_POLL)

    async def _result(self, handle: WorkflowHandle) -> TaskOutcome:
        loop = asyncio.get_running_loop()
        s = self.settings
        deadline = (
            loop.time() + s.temporal_activity_timeout * s.temporal_max_attempts + s.lost_contact_grace
        )
        delay = 0.5
        while True:
            try:
                return await handle.result()
            except WorkflowFailureError as exc:
                if isinstance(exc.cause, CancelledError):
                    return TaskOutcome(Outcome.CANCELED, "Canceled.")
                return TaskOutcome(Outcome.FAILED, root_message(exc))
            except (RPCError, RPCTimeoutOrCancelledError) as exc:
                if loop.time() > deadline:
                    # Reported as failed; task_complete overwrites it with the
                    # real outcome if the workflow finishes after all.
                    return TaskOutcome(
                        Outcome.LOST,
                        f"Lost contact with Temporal while the task ran ({exc}); "
                        "it may still finish there: GetTask shows the final state.",
                    )
                log.warning("waiting for workflow %s: %s; retrying", handle.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

"""The client side of a durable task: start (or join) its workflow, follow it to its
end or to a question, hand it the user's answer, cancel it.

A task runs durably or directly, decided *before* anything runs: if Temporal
refused the start outright the task may run directly; once a start may have
been accepted the task is never also run directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from a2a.server.cluster import StoredTask, VersionedTaskStore
from a2a.types.a2a_pb2 import TaskState
from temporalio.client import (
    Client,
    RPCError,
    RPCTimeoutOrCancelledError,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCStatusCode

from molecule_runtime.config import Settings
from molecule_runtime.durable.connection import TemporalConnection
from molecule_runtime.durable.peers import WorkflowPeers
from molecule_runtime.durable.registry import LiveTask, LiveTaskRegistry
from molecule_runtime.durable.types import (
    PROVIDE_INPUT_SIGNAL,
    WORKFLOW_NAME,
    InputReply,
    TaskOutcome,
    TaskRef,
    WorkflowInput,
    workflow_id,
)
from molecule_runtime.durable.worker import worker_identity
from molecule_runtime.durable.workflow import root_message
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.observability.spans import inject_trace_context
from molecule_runtime.states import state_of
from molecule_runtime.store import LiveEventOffsets
from molecule_runtime.store.owners import runtime_context
from molecule_runtime.vocabulary import Meta, Outcome

log = logging.getLogger(__name__)

# Transport failures that mean "the request did not reach Temporal".
_UNREACHABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}
# Failures worth retrying a start for; temporalio reports its own RPC timeout
# as CANCELLED ("Timeout expired").
_TRANSIENT = _UNREACHABLE | {RPCStatusCode.CANCELLED, RPCStatusCode.RESOURCE_EXHAUSTED}
# A start gets this long per try, and this long in all, under heavy load.
START_RPC_TIMEOUT = 10.0
START_DEADLINE = 60.0
# A burst of eager starts whose first workflow tasks all run on this process's
# 2 cores would time out in Temporal and be retried, adding load; past this
# many at once, starts wait here instead.
MAX_CONCURRENT_STARTS = 32
START_GATE_HOLD = 10.0
# How often a followed task's stored state is read while no chunk streams
# here: a question stored by another process reaches the client within this.
ELSEWHERE_POLL = 0.25


class StartRefused(Exception):
    """Temporal refused the connection before anything was sent: the task may run directly."""


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
    ) -> None:
        self.settings = settings
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
        self._start_gate = asyncio.Semaphore(MAX_CONCURRENT_STARTS)
        self._peers = WorkflowPeers(
            lambda: connection.client,
            settings.temporal_namespace,
            settings.temporal_task_queue,
            worker_identity(settings),
        )

    def accepting(self) -> bool:
        """True when new tasks should run on Temporal."""
        c = self.connection
        return self.accept_tasks and c.healthy and c.client is not None

    def _workflow_input(self, ref: TaskRef) -> WorkflowInput:
        s = self.settings
        return WorkflowInput(
            ref=ref,
            workspace_id=s.workspace_id,
            process_queue=s.process_task_queue,
            shared_queue=s.temporal_task_queue,
            heartbeat_timeout=s.temporal_heartbeat_timeout,
            activity_timeout=s.temporal_activity_timeout,
            schedule_to_start_timeout=s.temporal_schedule_to_start_timeout,
            max_attempts=s.temporal_max_attempts,
            retry_initial_interval=s.temporal_retry_initial_interval,
            trace_carrier=inject_trace_context(),
            input_timeout=s.input_timeout,
        )

    def _handle(self, client: Client, task_id: str) -> WorkflowHandle:
        wf_id = workflow_id(self.settings.workspace_id, task_id)
        return client.get_workflow_handle(wf_id, result_type=TaskOutcome)

    async def run(self, ref: TaskRef, events: TaskEvents) -> bool:
        """Run the task as a workflow; False if Temporal refused it before anything ran.

        The task, with the user's message, must be in the task store (or on its
        way through `events`): the workflow carries ids only.
        """
        client = self.connection.client
        if client is None:
            self.fallbacks += 1
            return False
        with self.registry.register(events) as entry:
            try:
                async with self._start_gate:
                    handle = await self._start(client, ref, events)
                    # Hold the gate until the workflow's first task has run here.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(events.working.wait(), START_GATE_HOLD)
            except StartRefused:
                self.fallbacks += 1
                return False
            entry.handle = handle
            await self._follow(handle, events)
            return True

    async def _start(self, client: Client, ref: TaskRef, events: TaskEvents) -> WorkflowHandle:
        """Start (or join) the task's workflow.

        Retrying is safe: the workflow id is the task's and USE_EXISTING joins a
        run that did start. Once a start may have been accepted the task must
        never run directly, so it is retried until Temporal answers; the client
        is told after START_DEADLINE that the outcome is not known yet.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_DEADLINE
        delay = 0.2
        ambiguous = False
        told = False
        wf_id = workflow_id(self.settings.workspace_id, ref.task_id)
        while True:
            try:
                return await client.start_workflow(
                    WORKFLOW_NAME,
                    self._workflow_input(ref),
                    id=wf_id,
                    task_queue=self.settings.temporal_task_queue,
                    result_type=TaskOutcome,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    request_eager_start=True,
                    rpc_timeout=timedelta(
                        seconds=max(START_RPC_TIMEOUT, self.settings.temporal_connect_timeout)
                    ),
                )
            except WorkflowAlreadyStartedError:
                # The same task was submitted before and has finished: its
                # result stands, it is not run again.
                return self._handle(client, ref.task_id)
            except (RPCError, RPCTimeoutOrCancelledError) as exc:
                status = getattr(exc, "status", None)
                if isinstance(exc, RPCError) and status not in _TRANSIENT:
                    raise
                error = f"start_workflow: {exc}"
                if status == RPCStatusCode.UNAVAILABLE and not ambiguous:
                    self.connection.set_healthy(False, error)
                    raise StartRefused(error) from exc
                self.connection.last_error = error
                ambiguous = True
                if loop.time() > deadline and not told:
                    told = True
                    await events.status(
                        state_of(Outcome.WORKING),
                        f"Temporal has not confirmed the start of this task yet ({exc}); "
                        "it is not known whether it runs. Still trying: do not send it again, "
                        "GetTask shows the outcome.",
                    )
                log.warning("start_workflow for %s: %s; retrying", wf_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ensure_started(self, ref: TaskRef) -> bool:
        """Start the workflow of a stored task unless one exists; True if started now."""
        client = self.connection.client
        if client is None:
            return False
        wf_id = workflow_id(self.settings.workspace_id, ref.task_id)
        try:
            await client.get_workflow_handle(wf_id).describe()
            return False
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        await client.start_workflow(
            WORKFLOW_NAME,
            self._workflow_input(ref),
            id=wf_id,
            task_queue=self.settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        return True

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
            entry.handle = handle
            try:
                await handle.signal(
                    PROVIDE_INPUT_SIGNAL,
                    reply,
                    rpc_timeout=timedelta(seconds=self.settings.temporal_connect_timeout),
                )
            except RPCError as exc:
                if exc.status in _UNREACHABLE:
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
            await self._follow(handle, events)
            return True

    async def _follow(self, handle: WorkflowHandle, events: TaskEvents) -> None:
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

    async def _cancel_quietly(self, handle: WorkflowHandle) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(handle.cancel()), timeout=2)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task's workflow and wait (bounded) until the adapter has stopped."""
        entry: LiveTask | None = self.registry.get(task_id)
        if entry is not None and entry.handle is not None:
            entry.cancel_requested.set()
            await self._cancel_quietly(entry.handle)
            # The adapter sees CancelledError at its next heartbeat reply.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.finished.wait(), timeout=10)
            return True
        client = self.connection.client
        if client is None:
            return False
        try:
            await self._handle(client, task_id).cancel()
        except Exception:
            return False
        return True

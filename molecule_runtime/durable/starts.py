"""Starting a task's workflow: through a gate that keeps a burst of eager starts
from overloading this process, retried until Temporal answers once a start may
have been accepted, and, once this process hands its tasks over at shutdown,
started for the processes that stay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from temporalio.client import Client, RPCError, RPCTimeoutOrCancelledError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCStatusCode

from molecule_runtime.config import Settings
from molecule_runtime.durable.connection import TemporalConnection
from molecule_runtime.durable.registry import LiveTask, until_any
from molecule_runtime.durable.types import (
    WORKFLOW_NAME,
    TaskOutcome,
    TaskRef,
    WorkflowInput,
    workflow_id,
)
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.observability.spans import inject_trace_context
from molecule_runtime.states import state_of
from molecule_runtime.vocabulary import Outcome

log = logging.getLogger(__name__)

# Transport failures that mean "the request did not reach Temporal".
UNREACHABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}
# Failures worth retrying a start for; temporalio reports its own RPC timeout
# as CANCELLED ("Timeout expired").
_TRANSIENT = UNREACHABLE | {RPCStatusCode.CANCELLED, RPCStatusCode.RESOURCE_EXHAUSTED}
# A start gets this long per try, and this long in all, under heavy load.
START_RPC_TIMEOUT = 10.0
START_DEADLINE = 60.0
# A burst of eager starts whose first workflow tasks all run on this process's
# 2 cores would time out in Temporal and be retried, adding load; past this
# many at once, starts wait here instead.
MAX_CONCURRENT_STARTS = 32
START_GATE_HOLD = 10.0


class StartRefused(Exception):
    """Temporal refused the connection before anything was sent: the task may run directly."""


class WorkflowStarts:
    def __init__(self, settings: Settings, connection: TemporalConnection, handover: asyncio.Event) -> None:
        self.settings = settings
        self.connection = connection
        # Set when this process hands its tasks over at shutdown.
        self.handover = handover
        self._start_gate = asyncio.Semaphore(MAX_CONCURRENT_STARTS)
        self._leaving_starts: set[asyncio.Future[None]] = set()

    def workflow_input(self, ref: TaskRef, *, here: bool = True) -> WorkflowInput:
        s = self.settings
        return WorkflowInput(
            ref=ref,
            workspace_id=s.workspace_id,
            process_queue=s.process_task_queue if here else s.temporal_task_queue,
            shared_queue=s.temporal_task_queue,
            heartbeat_timeout=s.temporal_heartbeat_timeout,
            activity_timeout=s.temporal_activity_timeout,
            schedule_to_start_timeout=s.temporal_schedule_to_start_timeout,
            max_attempts=s.temporal_max_attempts,
            retry_initial_interval=s.temporal_retry_initial_interval,
            trace_carrier=inject_trace_context(),
            input_timeout=s.input_timeout,
        )

    def handle(self, client: Client, task_id: str) -> WorkflowHandle:
        wf_id = workflow_id(self.settings.workspace_id, task_id)
        return client.get_workflow_handle(wf_id, result_type=TaskOutcome)

    async def start_here(
        self,
        client: Client,
        ref: TaskRef,
        events: TaskEvents,
        entry: LiveTask,
        accepted: Callable[[], None] | None = None,
    ) -> WorkflowHandle | None:
        """Start the workflow for this process to stream, through the start gate
        (`accepted` is called once Temporal has it); once this process hands its
        tasks over, for any other one (None)."""
        if not await self._gate_or_handover():
            # Not left for this instance's restart (a scale-in has none): its
            # own queue is skipped, and the start outlives this request.
            start = asyncio.ensure_future(self._start_for_others(client, ref, events))
            self._leaving_starts.add(start)
            start.add_done_callback(self._leaving_starts.discard)
            await asyncio.shield(start)
            return None
        try:
            handle = await self._start(client, ref, events)
            entry.attach(handle)
            if accepted is not None:
                accepted()
            # Hold the gate until the workflow's first task has run here
            # (or the task is canceled: then it may never run).
            await until_any((entry.received, entry.cancel_requested), START_GATE_HOLD)
            return handle
        finally:
            self._start_gate.release()

    async def _start_for_others(self, client: Client, ref: TaskRef, events: TaskEvents) -> None:
        try:
            await self._start(client, ref, events, here=False)
        except Exception as exc:
            # Never run directly while leaving: it stays submitted, and this
            # instance's start-up sweep starts it after a restart.
            log.warning(
                "task %s: its workflow could not be started at the hand-over (%s); "
                "the restarted instance starts it",
                ref.task_id,
                exc,
            )

    async def _gate_or_handover(self) -> bool:
        """A place in the start gate (True), or False once this process hands its tasks over."""
        if self.handover.is_set():
            return False
        if not self._start_gate.locked():
            await self._start_gate.acquire()  # free: granted without waiting
            return True
        acquire = asyncio.ensure_future(self._start_gate.acquire())
        leaving = asyncio.ensure_future(self.handover.wait())
        try:
            await asyncio.wait({acquire, leaving}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            leaving.cancel()
            if acquire.done():
                self._start_gate.release()
            else:
                acquire.cancel()  # a place granted meanwhile is given back by the semaphore
            raise
        leaving.cancel()
        if not acquire.done():
            acquire.cancel()
            return False
        if self.handover.is_set():
            self._start_gate.release()
            return False
        return True

    async def _start(
        self, client: Client, ref: TaskRef, events: TaskEvents, *, here: bool = True
    ) -> WorkflowHandle:
        """Start (or join) the task's workflow; `here`: its attempts run on this
        process's queue, next to the client's stream.

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
                    self.workflow_input(ref, here=here),
                    id=wf_id,
                    task_queue=self.settings.temporal_task_queue,
                    result_type=TaskOutcome,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    request_eager_start=here,
                    rpc_timeout=timedelta(
                        seconds=max(START_RPC_TIMEOUT, self.settings.temporal_connect_timeout)
                    ),
                )
            except WorkflowAlreadyStartedError:
                # The same task was submitted before and has finished: its
                # result stands, it is not run again.
                return self.handle(client, ref.task_id)
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
            self.workflow_input(ref),
            id=wf_id,
            task_queue=self.settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        return True

"""The three activities. They raise on failure so Temporal's retry policy fires.

The edges of an `llm_call` attempt (may it run, handing it back) are durable/attempt_edges.py,
the stages' store reads durable/store_reads.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from a2a.server.cluster import VersionedTaskStore
from a2a.types.a2a_pb2 import Task, TaskState
from temporalio import activity

from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.durable.attempt_edges import (
    add_stored_usage,
    attempt_ends,
    bookkeeping_ends,
    final_result,
    handed_back,
    release_sticky_queue,
    store_before_handover,
)
from molecule_runtime.durable.early import Check, EarlyAttempt
from molecule_runtime.durable.pulse import note_dispatch
from molecule_runtime.durable.registry import LiveTaskRegistry
from molecule_runtime.durable.running import RunningAttempts
from molecule_runtime.durable.store_reads import read_while_store_away, stored_input
from molecule_runtime.durable.types import (
    CompleteInput,
    LlmCallInput,
    LlmCallResult,
    ReceiveResult,
    TaskRef,
)
from molecule_runtime.execution.attempt import AttemptResult, run_attempt
from molecule_runtime.execution.events import DEFAULT_MAX_FILE_BYTES, TaskEvents
from molecule_runtime.execution.headless import TaskFinishedElsewhere, headless_events, stored_task
from molecule_runtime.execution.inputs import DEFAULT_HISTORY_BYTES
from molecule_runtime.observability import metrics
from molecule_runtime.observability.logs import current_task_id
from molecule_runtime.observability.spans import stage_span
from molecule_runtime.states import TERMINAL_STATES, outcome_of, state_of
from molecule_runtime.store.health import until_stored
from molecule_runtime.vocabulary import Delivery, Meta, Mode, Outcome, Stage

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Heartbeat interval of an attempt this process asked Temporal to cancel.
HURRIED_HEARTBEAT = 0.1


class TaskActivities:
    """Activities bound to this process's adapter, task store and live registry."""

    def __init__(
        self,
        adapter: BaseAdapter,
        store: VersionedTaskStore,
        registry: LiveTaskRegistry,
        heartbeat_interval: float,
        workspace_id: str = "",
        batch_window: float = 0.0,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.history_bytes = history_bytes
        self.workspace_id = workspace_id
        self.batch_window = batch_window
        self.adapter = adapter
        self.store = store
        self.registry = registry
        self.heartbeat_interval = heartbeat_interval
        self._running = RunningAttempts()
        # Set when this process hands its tasks over at shutdown (DurableTasks.handover).
        self.handover: asyncio.Event | None = None

    def _events(
        self, task_id: str, context_id: str, artifact_id: str = ""
    ) -> tuple[TaskEvents, Delivery]:
        entry = self.registry.get(task_id)
        if entry is not None:
            return entry.events, Delivery.LIVE
        events = headless_events(self.store, task_id, context_id, artifact_id)
        events.max_file_bytes = self.max_file_bytes
        return events, Delivery.HEADLESS

    async def _from_store(self, read: Callable[[], Awaitable[_T]]) -> _T:
        return await read_while_store_away(self.store, read, self.heartbeat_interval)

    async def _stored(self, task_id: str) -> Task | None:
        return await self._from_store(functools.partial(stored_task, self.store, task_id))

    def _span_attrs(self, delivery: Delivery) -> dict[str, str]:
        return {
            "mode": Mode.DURABLE,
            "delivery": delivery,
            "adapter": self.adapter.name(),
            "workspace_id": self.workspace_id,
        }

    @activity.defn(name=Stage.TASK_RECEIVE)
    async def task_receive(self, ref: TaskRef) -> ReceiveResult:
        current_task_id.set(ref.task_id)
        task = TaskInput(task_id=ref.task_id, context_id=ref.context_id, text="")
        events, delivery = self._events(task.task_id, task.context_id)
        with bookkeeping_ends(Stage.TASK_RECEIVE, ref.task_id, self.leaving), stage_span(
            Stage.TASK_RECEIVE, task, self._span_attrs(delivery)
        ):
            if delivery == Delivery.HEADLESS:
                current = await self._stored(task.task_id)
                if current is not None and current.status.state in TERMINAL_STATES:
                    outcome = outcome_of(current.status.state) or Outcome.FAILED
                    return ReceiveResult(proceed=False, state=outcome)
                if current is not None and dict(current.metadata).get(Meta.MODE) == Mode.DIRECT:
                    return ReceiveResult(proceed=False, state=Outcome.RAN_DIRECTLY)
                # The workflow's first task did not run where the task was
                # started (no eager start): that process may hold the client's
                # stream and write the task, and a write from here would break
                # its live view. llm_call reports the task working instead.
                return ReceiveResult(proceed=True)
            if not events.working.is_set():  # else the early attempt reported it
                await events.status(TaskState.TASK_STATE_WORKING, metadata={Meta.MODE: Mode.DURABLE})
            await events.persisted()
            self._received(ref.task_id)
            return ReceiveResult(proceed=True)

    def _received(self, task_id: str) -> None:
        entry = self.registry.get(task_id)
        if entry is not None and not entry.received.is_set():
            entry.received.set()
            if entry.early is not None:
                entry.early.restart_clock()

    def begin_early(
        self,
        events: TaskEvents,
        first_input: Callable[[], Awaitable[TaskInput]],
        deadline: float,
        eager: bool,
        check: Check | None = None,
    ) -> EarlyAttempt:
        """Begin the task's first attempt now, for `llm_call` to take over (durable/early.py)."""

        async def first() -> AttemptResult:
            # As llm_call's read of the input: waited for while the store is away.
            task = replace(await until_stored(first_input, getattr(self.store, "health", None)), attempt=1)
            await events.status(TaskState.TASK_STATE_WORKING, metadata={Meta.MODE: Mode.DURABLE})
            with stage_span(Stage.LLM_CALL, task, self._span_attrs(Delivery.LIVE)):
                # A new task's first attempt: nothing of it is journaled yet.
                return await run_attempt(
                    self.adapter, task, events, batch_window=self.batch_window, write_ahead=True, fresh=True
                )

        running = asyncio.get_running_loop().create_task(first(), name=f"early-attempt:{events.task_id}")
        return EarlyAttempt(running, events.task_id, deadline, eager=eager, check=check)

    @activity.defn(name=Stage.LLM_CALL)
    async def llm_call(self, inp: LlmCallInput) -> LlmCallResult:
        info = activity.info()
        note_dispatch(info)
        ref = inp.ref
        if ref is None:  # scheduled by a workflow from before inputs went by reference
            assert inp.task is not None
            ref = TaskRef(inp.task.task_id, inp.task.context_id)
        current_task_id.set(ref.task_id)
        events, delivery = self._events(ref.task_id, ref.context_id, inp.artifact_id)
        # From the start: reading the input and the stored task can take a
        # while under a burst, and an attempt must not time out on heartbeats
        # because this process is busy.
        heartbeats = asyncio.create_task(self._heartbeat_loop(ref.task_id))
        try:
            return await self._attempt(inp, info, ref, events, delivery)
        finally:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeats

    def leaving(self) -> bool:
        """This process hands its tasks over (shutdown): it starts no attempt."""
        return activity.is_worker_shutdown() or (self.handover is not None and self.handover.is_set())

    async def _attempt(
        self,
        inp: LlmCallInput,
        info: activity.Info,
        ref: TaskRef,
        events: TaskEvents,
        delivery: Delivery,
    ) -> LlmCallResult:
        attempt = inp.attempt_base + info.attempt
        if self.leaving():
            # Temporal may hand a leaving process one more attempt (a retry,
            # a headless one): straight back, before it writes anything.
            await self._settle_early(ref.task_id, events, delivery)
            raise handed_back(ref.task_id, attempt, info.attempt, "This process is shutting down")
        try:
            async with attempt_ends(self.store, events, attempt, info.attempt, self.leaving):
                return await self._run(inp, attempt, info, ref, events, delivery)
        finally:
            self._running.leave(ref.task_id)

    async def _run(
        self,
        inp: LlmCallInput,
        attempt: int,
        info: activity.Info,
        ref: TaskRef,
        events: TaskEvents,
        delivery: Delivery,
    ) -> LlmCallResult:
        if delivery == Delivery.LIVE:
            self._received(ref.task_id)
        await self._running.take_over(ref.task_id, info.activity_id, info.attempt)
        early = self._early(ref.task_id, delivery)
        if early is not None:
            # The first llm_call's first attempt to arrive here takes the early
            # attempt over: attempt 1, or a retry when attempt 1 never arrived
            # (its dispatch was lost): all of them come to this process's queue.
            if inp.task is None and inp.attempt_base == 0 and (info.attempt == 1 or early.takeable()):
                if info.attempt > 1:
                    log.warning(
                        "task %s: attempt %d takes over the first attempt, which no attempt "
                        "had taken (Temporal started attempt 1, it never reached this process)",
                        ref.task_id,
                        attempt,
                    )
                # Cancelling this activity cancels the attempt it awaits.
                result = await early.take()
                await events.persisted()
                return LlmCallResult.of(result)
            await early.stop()  # a later attempt: the early one never writes beside it
        task = replace(inp.task or await self._stored_input(ref, events, delivery), attempt=attempt)
        if delivery == Delivery.HEADLESS or task.attempt > 1:
            # A retry may find the task already finished: never run it again.
            current = await self._stored(task.task_id)
            finished = final_result(current)
            if finished is not None:
                log.info(
                    "task %s: attempt %d not run, the task is already %s",
                    task.task_id,
                    task.attempt,
                    finished.ended,
                )
                return finished
            # Live first attempts were seeded by the executor from the stored task.
            add_stored_usage(current, events)
            if delivery == Delivery.HEADLESS and (
                current is None or dict(current.metadata).get(Meta.MODE) != Mode.DURABLE
            ):
                await events.status(TaskState.TASK_STATE_WORKING, metadata={Meta.MODE: Mode.DURABLE})
        if delivery == Delivery.LIVE and not events.working.is_set():
            # task_receive ran in another process (see there): the task is
            # reported working by the process that streams it.
            await events.status(TaskState.TASK_STATE_WORKING, metadata={Meta.MODE: Mode.DURABLE})
        if task.attempt > 1:
            metrics.RETRIES.inc()
        if delivery == Delivery.HEADLESS:
            metrics.HEADLESS.inc()
            await release_sticky_queue(info)
            log.info(
                "task %s: attempt %d runs headless (no client stream in this process)",
                task.task_id,
                task.attempt,
            )
        with stage_span(Stage.LLM_CALL, task, self._span_attrs(delivery)):
            result = await run_attempt(
                self.adapter,
                task,
                events,
                # No heartbeat per chunk: each one costs an asyncio task in
                # the SDK; the heartbeat loop proves liveness.
                batch_window=self.batch_window,
                # A continuing adapter's chunks reach clients only once
                # stored, so its retry never repeats text a client saw.
                write_ahead=True,
            )
        # Temporal must not hear "done" before the answer is stored.
        await events.persisted()
        return LlmCallResult.of(result)

    async def _settle_early(self, task_id: str, events: TaskEvents, delivery: Delivery) -> None:
        """An early attempt of a task handed back stops first, its events stored:
        the next attempt, on another replica, must never write beside it."""
        early = self._early(task_id, delivery)
        if early is not None and not early.taken:
            await early.stop()
            await store_before_handover(self.store, task_id, events)

    def _early(self, task_id: str, delivery: Delivery) -> EarlyAttempt | None:
        entry = self.registry.get(task_id) if delivery == Delivery.LIVE else None
        return entry.early if entry is not None else None

    async def _stored_input(self, ref: TaskRef, events: TaskEvents, delivery: Delivery) -> TaskInput:
        """The adapter's input, rebuilt from the task store as the request path built it."""
        if delivery == Delivery.LIVE:
            # The request that accepted the message may still be storing it.
            await events.persisted()
        return await stored_input(self.store, ref, self.history_bytes, self.heartbeat_interval)

    async def _heartbeat_loop(self, task_id: str) -> None:
        # Heartbeats prove liveness while the adapter is between chunks, and
        # their replies are how a cancel request reaches this activity. Each
        # one is a write in Temporal, so they are sparse until this process
        # asks for a cancel; then they are frequent until the request arrives.
        entry = self.registry.get(task_id)
        hurry = entry.cancel_requested if entry is not None else None
        while True:
            activity.heartbeat()
            if hurry is None:
                await asyncio.sleep(self.heartbeat_interval)
            elif hurry.is_set():
                await asyncio.sleep(HURRIED_HEARTBEAT)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hurry.wait(), self.heartbeat_interval)

    @activity.defn(name=Stage.TASK_COMPLETE)
    async def task_complete(self, inp: CompleteInput) -> None:
        current_task_id.set(inp.task_id)
        task = TaskInput(task_id=inp.task_id, context_id=inp.context_id, text="")
        events, delivery = self._events(inp.task_id, inp.context_id)
        with bookkeeping_ends(Stage.TASK_COMPLETE, inp.task_id, self.leaving), stage_span(
            Stage.TASK_COMPLETE, task, {**self._span_attrs(delivery), "outcome": inp.state}
        ):
            metadata = None
            if delivery == Delivery.HEADLESS:
                current = await self._stored(inp.task_id)
                if current is not None and current.status.state in TERMINAL_STATES:
                    if not dict(current.metadata).get(Meta.LOST_CONTACT):
                        return  # safe to run twice
                    # The server reported a failure when it lost Temporal; the
                    # workflow did finish, so its real outcome replaces that.
                    metadata = {Meta.LOST_CONTACT: False}
            try:
                await events.status(state_of(inp.state), inp.message or None, metadata=metadata)
                await events.persisted()
            except TaskFinishedElsewhere:
                return

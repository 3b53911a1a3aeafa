"""The `llm_call` activity: one attempt of the adapter, with live delivery when
the client's stream is in this process, headless otherwise. A new task's first
attempt may have begun before it (durable/early.py); the edges of an attempt
are durable/attempt_edges.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from a2a.types.a2a_pb2 import TaskState
from temporalio import activity

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.durable.attempt_edges import (
    add_stored_usage,
    attempt_ends,
    final_result,
    handed_back,
    release_sticky_queue,
    store_before_handover,
)
from molecule_runtime.durable.early import EarlyAttempt
from molecule_runtime.durable.pulse import note_dispatch
from molecule_runtime.durable.store_reads import stored_input
from molecule_runtime.durable.task_access import TaskAccess
from molecule_runtime.durable.types import LlmCallInput, LlmCallResult, TaskRef
from molecule_runtime.durable.watch import LlmCallWatch
from molecule_runtime.execution.attempt import AttemptResult, run_attempt
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.observability import metrics
from molecule_runtime.observability.logs import current_task_id
from molecule_runtime.observability.spans import stage_span
from molecule_runtime.store.health import until_stored
from molecule_runtime.vocabulary import Delivery, Meta, Mode, Stage

log = logging.getLogger("molecule_runtime.durable.activities")

# Heartbeat interval of an attempt this process asked Temporal to cancel.
HURRIED_HEARTBEAT = 0.1


class LlmCallActivity(TaskAccess):
    """`llm_call`, and the first attempt begun before it (`begin_early`)."""

    def begin_early(
        self,
        events: TaskEvents,
        first_input: Callable[[], Awaitable[TaskInput]],
        deadline: float,
        eager: bool,
        watch: LlmCallWatch | None = None,
    ) -> EarlyAttempt:
        """Begin the task's first attempt now, for `llm_call` to take over (durable/early.py)."""

        async def first() -> AttemptResult:
            # As llm_call's read of the input: waited for while the store is away.
            task = replace(await until_stored(first_input, getattr(self.store, "health", None)), attempt=1)
            await events.status(TaskState.TASK_STATE_WORKING, metadata={Meta.MODE: Mode.DURABLE})
            with stage_span(Stage.LLM_CALL, task, self._span_attrs(Delivery.LIVE)):
                # A new task's first attempt: nothing of it is journaled yet.
                result = await run_attempt(
                    self.adapter, task, events, batch_window=self.batch_window, write_ahead=True, fresh=True
                )
            # Its answer may be reported by id (a lost dispatch): stored first.
            await events.persisted()
            return result

        running = asyncio.get_running_loop().create_task(first(), name=f"early-attempt:{events.task_id}")
        if watch is None:
            return EarlyAttempt(running, events.task_id, deadline, eager=eager)
        return EarlyAttempt(
            running,
            events.task_id,
            deadline,
            eager=eager,
            check=watch,
            report=watch.report,
            report_after=watch.lost_after,
        )

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

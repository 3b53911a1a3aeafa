"""The three activities. They raise on failure so Temporal's retry policy fires.

`llm_call` is durable/llm_call.py; what the activities share, durable/task_access.py;
the stages' store reads, durable/store_reads.py.
"""

from __future__ import annotations

from a2a.types.a2a_pb2 import TaskState
from temporalio import activity

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.durable.attempt_edges import bookkeeping_ends
from molecule_runtime.durable.llm_call import LlmCallActivity
from molecule_runtime.durable.types import CompleteInput, ReceiveResult, TaskRef
from molecule_runtime.execution.headless import TaskFinishedElsewhere
from molecule_runtime.observability.logs import current_task_id
from molecule_runtime.observability.spans import stage_span
from molecule_runtime.states import TERMINAL_STATES, outcome_of, state_of
from molecule_runtime.vocabulary import Delivery, Meta, Mode, Outcome, Stage


class TaskActivities(LlmCallActivity):
    """Activities bound to this process's adapter, task store and live registry."""

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

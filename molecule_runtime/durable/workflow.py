"""The task workflow. Orchestration only: all I/O happens in the activities."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError,
    TimeoutType,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from molecule_runtime.adapters.base import TaskInput
    from molecule_runtime.durable.types import (
        NON_RETRYABLE_TYPE,
        PROVIDE_INPUT_SIGNAL,
        WORKER_SHUTDOWN_TYPE,
        WORKFLOW_NAME,
        CompleteInput,
        InputReply,
        LlmCallInput,
        LlmCallResult,
        ReceiveResult,
        TaskOutcome,
        TaskRef,
        WorkflowInput,
    )
    from molecule_runtime.vocabulary import Outcome, Stage

# task_receive / task_complete are short bookkeeping steps: local activities
# save two round trips through the server per task.
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
# Both ends of a task must get through a task store outage (minutes, not a
# number of tries): retried with back-off until the deadline.
COMPLETE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
COMPLETE_DEADLINE = timedelta(hours=24)
# Activities get ids, not the user's text and history (they read those from the
# task store). Histories recorded before sent the whole input and replay so.
BY_REFERENCE_PATCH = "payloads-by-reference"
# An adapter's own end (Done, Reject) is the workflow's outcome, stored by
# task_complete. Histories recorded before reported it as completed (llm_call
# stored the state itself).
ADAPTER_ENDS_PATCH = "adapter-ends-task"
# An attempt handed back at shutdown is scheduled again on the shared queue (any
# process), not counted as a failure. Histories recorded before retried it on
# the process's own queue, where the leaving process could take it again.
HANDBACK_PATCH = "handback-to-shared-queue"
# Bounds a task that every process keeps handing back (seconds, hand-backs).
HANDBACK_PAUSE_MAX = 30.0
MAX_HANDBACKS = 20


def handed_back_at(details: Sequence[object], base: int) -> tuple[int, int]:
    """(the attempt's number for the adapter, its number within its activity
    execution) as the hand-back reports them; older workers sent none."""
    if len(details) >= 2 and all(isinstance(d, int) for d in details[:2]):
        return int(details[0]), max(1, int(details[1]))  # type: ignore[call-overload]
    return base + 1, 1


def root_message(error: BaseException) -> str:
    """The innermost failure message (the adapter's own error text)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(getattr(error, "message", None) or error)


@workflow.defn(name=WORKFLOW_NAME)
class AgentTaskWorkflow:
    def __init__(self) -> None:
        self._waiting_for_input = False
        self._reply: InputReply | None = None

    @workflow.signal(name=PROVIDE_INPUT_SIGNAL)
    def provide_input(self, reply: InputReply) -> None:
        # Only an answer to the open question counts; duplicates are dropped.
        if self._waiting_for_input and self._reply is None:
            self._reply = reply

    @workflow.run
    async def run(self, inp: WorkflowInput) -> TaskOutcome:
        by_reference = workflow.patched(BY_REFERENCE_PATCH)
        first: TaskInput | TaskRef = inp.task_ref()
        if not by_reference and inp.task is not None:
            first = inp.task
        try:
            received = await workflow.execute_local_activity(
                Stage.TASK_RECEIVE,
                first,
                result_type=ReceiveResult,
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                schedule_to_close_timeout=COMPLETE_DEADLINE,
                retry_policy=COMPLETE_RETRY,
            )
        except (ActivityError, ApplicationError) as err:
            # Never leave the task without a final state. (A local activity's
            # final failure can arrive as the bare ApplicationError.)
            outcome = TaskOutcome(Outcome.FAILED, f"could not accept the task: {root_message(err)}")
            await self._complete(inp, outcome)
            return outcome
        if not received.proceed:
            # Already finished (e.g. a re-sent task): never run it again.
            return TaskOutcome(state=received.state, message="already finished")
        try:
            outcome = await self._turns(inp, first)
        except asyncio.CancelledError:
            await self._complete(inp, TaskOutcome(Outcome.CANCELED, "Canceled."))
            raise
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                await self._complete(inp, TaskOutcome(Outcome.CANCELED, "Canceled."))
                raise asyncio.CancelledError() from err
            outcome = TaskOutcome(Outcome.FAILED, root_message(err))
        await self._complete(inp, outcome)
        return outcome

    async def _turns(self, inp: WorkflowInput, first: TaskInput | TaskRef) -> TaskOutcome:
        """Run the adapter; after each question wait for the user's answer, then run it again."""
        task, queue, artifact_id = first, inp.process_queue, ""
        while True:
            result = await self._llm_call(inp, task, queue, artifact_id)
            # Only asked when the adapter ended the task, so histories of
            # plain answers carry no marker.
            if result.ended is not None and workflow.patched(ADAPTER_ENDS_PATCH):
                return TaskOutcome(result.ended, result.message)
            question = result.question
            if question is None:
                return TaskOutcome(Outcome.COMPLETED)
            self._waiting_for_input = True
            await self._complete(inp, TaskOutcome(Outcome.INPUT_REQUIRED, question))
            try:
                await workflow.wait_condition(
                    lambda: self._reply is not None,
                    timeout=timedelta(seconds=inp.input_timeout),
                )
            except builtins.TimeoutError:
                return TaskOutcome(
                    Outcome.FAILED, f"No answer to the question within {inp.input_timeout:g} s."
                )
            finally:
                self._waiting_for_input = False
            reply, self._reply = self._reply, None
            assert reply is not None
            answer = reply.ref if reply.ref is not None else reply.task
            assert answer is not None
            task, queue, artifact_id = answer, reply.process_queue, reply.artifact_id

    async def _llm_call(
        self, inp: WorkflowInput, task: TaskInput | TaskRef, queue: str, artifact_id: str
    ) -> LlmCallResult:
        """One turn of the adapter: what it produced, asked or ended with."""
        inline = task if isinstance(task, TaskInput) else None
        ref = task if isinstance(task, TaskRef) else None
        # Always set a heartbeat timeout for long-running activities: it bounds
        # crash detection and carries cancellation to the adapter.
        common = {
            "start_to_close_timeout": timedelta(seconds=inp.activity_timeout),
            "heartbeat_timeout": timedelta(seconds=inp.heartbeat_timeout),
            "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        }

        def retry(attempts: int) -> RetryPolicy:
            return RetryPolicy(
                initial_interval=timedelta(seconds=inp.retry_initial_interval),
                backoff_coefficient=2.0,
                maximum_attempts=attempts,
                # A hand-back at shutdown comes back here: its retry must not
                # go to the leaving process's own queue.
                non_retryable_error_types=[NON_RETRYABLE_TYPE, WORKER_SHUTDOWN_TYPE],
            )

        # Attempts that failed (a hand-back at shutdown is not a failure) and
        # the attempt number the next execution continues from.
        failed, base, handbacks = 0, 0, 0
        schedule_to_start: timedelta | None = timedelta(seconds=inp.schedule_to_start_timeout)
        while True:
            try:
                result = await workflow.execute_activity(
                    Stage.LLM_CALL,
                    LlmCallInput(
                        task=inline,
                        attempt_base=base,
                        trace_carrier=inp.trace_carrier,
                        artifact_id=artifact_id,
                        ref=ref,
                    ),
                    task_queue=queue,
                    schedule_to_start_timeout=schedule_to_start,
                    retry_policy=retry(max(1, inp.max_attempts - failed)),
                    **common,
                )
                return LlmCallResult.decode(result)
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START:
                    # The accepting process is gone: any worker finishes the
                    # task headless. At least one attempt is counted as used.
                    # Routine after a deploy: the headless attempt logs the hand-over.
                    workflow.logger.debug("llm_call moved to the shared queue %s", inp.shared_queue)
                    failed, base = max(failed, 1), max(base, 1)
                elif (
                    isinstance(cause, ApplicationError)
                    and cause.type == WORKER_SHUTDOWN_TYPE
                    and handbacks < MAX_HANDBACKS
                    and workflow.patched(HANDBACK_PATCH)
                ):
                    handbacks += 1
                    attempt, in_call = handed_back_at(cause.details, base)
                    failed += in_call - 1  # the call's earlier attempts failed for real
                    base = attempt
                    if handbacks > 1:
                        # Handed back again (every process is leaving): wait
                        # for one that stays rather than cycling through them.
                        await workflow.sleep(min(HANDBACK_PAUSE_MAX, 2.0 ** (handbacks - 2)))
                else:
                    raise
            queue, schedule_to_start = inp.shared_queue, None

    async def _complete(self, inp: WorkflowInput, outcome: TaskOutcome) -> None:
        ref = inp.task_ref()
        await workflow.execute_local_activity(
            Stage.TASK_COMPLETE,
            CompleteInput(
                task_id=ref.task_id,
                context_id=ref.context_id,
                state=outcome.state,
                message=outcome.message,
                trace_carrier=inp.trace_carrier,
            ),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            schedule_to_close_timeout=COMPLETE_DEADLINE,
            retry_policy=COMPLETE_RETRY,
        )


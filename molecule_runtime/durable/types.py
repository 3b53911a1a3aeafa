"""Serialisable inputs and outputs of the workflow and its activities (plain dataclasses)."""


from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.vocabulary import Outcome

if TYPE_CHECKING:
    from molecule_runtime.execution.attempt import AttemptResult

WORKFLOW_NAME = "AgentTaskWorkflow"
NON_RETRYABLE_TYPE = "NonRetryableError"
WORKER_SHUTDOWN_TYPE = "WorkerShutdown"
# An activity Temporal stopped waiting for (it timed out and was retried).
ABANDONED_TYPE = "AbandonedAttempt"


@dataclass
class TaskRef:
    """One turn of a task, by reference: ids only. The stage that runs the
    adapter rebuilds its input (the message, history, metadata) from the task
    store, so a workflow's history does not grow with what users send."""

    task_id: str
    context_id: str
    # The user's message of this turn ("": the task's latest).
    message_id: str = ""


@dataclass
class WorkflowInput:
    workspace_id: str
    # llm_call goes first to the queue of the process that holds the client's
    # stream; if that process is gone it moves to the shared queue.
    process_queue: str
    shared_queue: str
    heartbeat_timeout: float
    activity_timeout: float
    schedule_to_start_timeout: float
    max_attempts: int
    retry_initial_interval: float
    trace_carrier: dict[str, str] = field(default_factory=dict)
    # How long the task may wait for the user's answer to a question.
    input_timeout: float = 86400.0
    ref: TaskRef | None = None
    # Workflows started before inputs went by reference carry the whole input.
    task: TaskInput | None = None

    def task_ref(self) -> TaskRef:
        if self.ref is not None:
            return self.ref
        if self.task is None:
            raise ValueError("workflow input names no task")
        return TaskRef(self.task.task_id, self.task.context_id)


@dataclass
class LlmCallInput:
    # Set by workflows started before inputs went by reference (`ref` otherwise).
    task: TaskInput | None = None
    # Attempts used by earlier llm_call executions of this workflow (after a
    # move to the shared queue), so the adapter sees one running count.
    attempt_base: int = 0
    trace_carrier: dict[str, str] = field(default_factory=dict)
    # The artifact this turn streams into (empty: the task's first answer).
    artifact_id: str = ""
    ref: TaskRef | None = None


@dataclass
class InputReply:
    """The user's answer to an input-required question (signal `provide_input`)."""

    # The process holding the client's stream for the new turn.
    process_queue: str
    artifact_id: str
    ref: TaskRef | None = None
    # Sent by servers from before inputs went by reference.
    task: TaskInput | None = None


PROVIDE_INPUT_SIGNAL = "provide_input"


@dataclass
class LlmCallResult:
    """An attempt's result (execution/attempt.py `AttemptResult`) as the workflow's
    history records it: its end as an Outcome name, not a TaskState."""

    produced: int  # characters streamed
    question: str | None = None  # set when the adapter asked for input
    # Set when the adapter ended the task itself (Done, Reject): the Outcome
    # task_complete stores, with its status text (Done's message, Reject's reason).
    ended: str | None = None
    message: str = ""

    @staticmethod
    def of(result: "AttemptResult") -> "LlmCallResult":
        # Here, not at the top: states.py loads the A2A protos, payloads stay plain.
        from molecule_runtime.states import outcome_of

        ended = outcome_of(result.ended) if result.ended is not None else None
        return LlmCallResult(result.produced, result.question, ended, result.message)

    @staticmethod
    def decode(raw: Any) -> "LlmCallResult":
        """The activity's result as recorded in history. Earlier versions of the
        activity returned the count alone, or {"question": ...}, or no `ended`
        (they stored Done/Reject themselves); histories of workflows still
        running carry those."""
        if isinstance(raw, int):
            return LlmCallResult(raw)
        if isinstance(raw, dict):
            question = raw.get("question")
            ended = raw.get("ended")
            return LlmCallResult(
                int(raw.get("produced", 0)),
                str(question) if question else None,
                str(ended) if ended else None,
                str(raw.get("message") or ""),
            )
        raise TypeError(f"unexpected llm_call result {raw!r}")


@dataclass
class ReceiveResult:
    proceed: bool
    state: str = Outcome.WORKING


@dataclass
class CompleteInput:
    task_id: str
    context_id: str
    state: str  # an Outcome
    message: str = ""
    trace_carrier: dict[str, str] = field(default_factory=dict)


@dataclass
class TaskOutcome:
    state: str
    message: str = ""


def workflow_id(workspace_id: str, task_id: str) -> str:
    """Deterministic, so re-sending a task can never start a second run."""
    return f"molecule:{workspace_id}:{task_id}"

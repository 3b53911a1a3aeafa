"""A2A task states the runtime reasons about, and their `Outcome` names."""

from __future__ import annotations

from a2a.types.a2a_pb2 import Task, TaskState, TaskStatusUpdateEvent

from molecule_runtime.vocabulary import Outcome

TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
    }
)
# A task in these states has an attempt to come or under way.
RUNNING_STATES = frozenset({TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING})
# As the database store writes them (the JSON of TaskStatus).
TERMINAL_STATE_NAMES = frozenset(TaskState.Name(state) for state in TERMINAL_STATES)

_STATE_OF: dict[Outcome, TaskState] = {
    Outcome.COMPLETED: TaskState.TASK_STATE_COMPLETED,
    Outcome.CANCELED: TaskState.TASK_STATE_CANCELED,
    Outcome.FAILED: TaskState.TASK_STATE_FAILED,
    Outcome.LOST: TaskState.TASK_STATE_FAILED,
    Outcome.REJECTED: TaskState.TASK_STATE_REJECTED,
    Outcome.WORKING: TaskState.TASK_STATE_WORKING,
    Outcome.INPUT_REQUIRED: TaskState.TASK_STATE_INPUT_REQUIRED,
}
_OUTCOME_OF: dict[TaskState, Outcome] = {
    TaskState.TASK_STATE_COMPLETED: Outcome.COMPLETED,
    TaskState.TASK_STATE_CANCELED: Outcome.CANCELED,
    TaskState.TASK_STATE_FAILED: Outcome.FAILED,
    TaskState.TASK_STATE_REJECTED: Outcome.REJECTED,
    TaskState.TASK_STATE_INPUT_REQUIRED: Outcome.INPUT_REQUIRED,
    TaskState.TASK_STATE_WORKING: Outcome.WORKING,
}


def state_of(outcome: str) -> TaskState:
    """The task state an outcome is reported as (an unknown one as failed)."""
    try:
        return _STATE_OF[Outcome(outcome)]
    except (ValueError, KeyError):
        return TaskState.TASK_STATE_FAILED


def outcome_of(state: TaskState) -> Outcome | None:
    return _OUTCOME_OF.get(state)


def is_terminal(event: object) -> bool:
    """True for a Task or status update that ends the task."""
    return isinstance(event, Task | TaskStatusUpdateEvent) and event.status.state in TERMINAL_STATES


# States in which the task waits for the client (an answer, credentials).
INTERRUPTED_STATES = frozenset(
    {TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED}
)


def is_interrupted(event: object) -> bool:
    """True for a Task or status update that leaves the task waiting for the client."""
    return (
        isinstance(event, Task | TaskStatusUpdateEvent)
        and event.status.state in INTERRUPTED_STATES
    )

"""A2A task states the runtime reasons about, in one place."""

from __future__ import annotations

from a2a.types.a2a_pb2 import Task, TaskState, TaskStatusUpdateEvent

TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
    }
)
# As the database store writes them (the JSON of TaskStatus).
TERMINAL_STATE_NAMES = frozenset(TaskState.Name(state) for state in TERMINAL_STATES)


def is_terminal(event: object) -> bool:
    """True for a Task or status update that ends the task."""
    return isinstance(event, Task | TaskStatusUpdateEvent) and event.status.state in TERMINAL_STATES

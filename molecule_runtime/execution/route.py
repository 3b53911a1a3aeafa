"""Which way a task runs, chosen once before anything ran: directly in this
process, or durably as a Temporal workflow (started, or resumed for the next
turn of a durable task whose workflow waits for the answer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from a2a.types.a2a_pb2 import Task

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.vocabulary import Meta, Mode


class DurableRoute(Protocol):
    """Durable mode as dispatch uses it (durable/process.py `DurableRoute` over
    `DurableTasks`; execution imports no durable module). A turn is named by
    ids: the workflow reads the rest from the task store."""

    def accepting(self) -> bool:
        """True when new tasks should run on Temporal."""
        ...

    async def run(
        self,
        task_id: str,
        context_id: str,
        message_id: str,
        events: TaskEvents,
        first_input: Callable[[], Awaitable[TaskInput]] | None = None,
    ) -> bool:
        """Run the task as a workflow; False if Temporal refused it before anything
        ran. `first_input`: the request's input, for the first attempt to begin
        while the workflow starts."""
        ...

    async def resume(
        self, task_id: str, context_id: str, message_id: str, events: TaskEvents
    ) -> bool:
        """Hand the stored answer to the waiting workflow; False if it could not be told."""
        ...

    async def cancel(self, task_id: str) -> bool:
        """Cancel the task's workflow."""
        ...


@dataclass(frozen=True)
class Route:
    mode: Mode
    # The next turn of a durable task: its workflow waits for the answer.
    resume: bool = False


DIRECT = Route(Mode.DIRECT)
DURABLE = Route(Mode.DURABLE)
RESUME = Route(Mode.DURABLE, resume=True)


def choose_route(current: Task | None, durable: DurableRoute | None) -> Route:
    """A later turn continues in the mode its task started in; a new task runs
    durably when Temporal takes tasks now, else directly (the fallback)."""
    if current is not None:
        return RESUME if dict(current.metadata).get(Meta.MODE) == Mode.DURABLE else DIRECT
    if durable is not None and durable.accepting():
        return DURABLE
    return DIRECT

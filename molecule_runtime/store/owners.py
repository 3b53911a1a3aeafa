"""Who owns a task, for the runtime's own reads and writes.

Every task belongs to the principal that created it: the SDK's stores scope
each read and write by the owner of the call context (`resolve_user_scope`,
the user name of `ServerCallContext.user`). The runtime also reads and writes
tasks outside any request — durable stages delivered headless, the start-up
sweep, a task failed at shutdown — and must then act as the task's owner, not
as a nameless caller who owns nothing. Such calls pass `runtime_context()`;
the task store looks the owner up by task id (task ids are the primary key of
the SDK's `tasks` table, so an id has exactly one owner).

`PrincipalUser` is the one way a principal reaches the SDK as its user, for
all three callers: HTTP (the Starlette user, which the SDK wraps), gRPC (the
call context's user) and the runtime acting as a task's owner.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from a2a.auth.user import User
from a2a.server.context import ServerCallContext
from a2a.server.models import TaskModel
from a2a.server.tasks import InMemoryTaskStore
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.authentication import BaseUser

from molecule_runtime.sdk_seam import memory_tasks

# Call-context state key marking the runtime's own calls.
RUNTIME_CALL = "molecule.runtime_call"
# Owners remembered from this process's writes (a miss costs one indexed read).
_REMEMBERED = 10_000
_TASKS = TaskModel.__table__


@dataclass(frozen=True)
class Principal:
    name: str  # what logs may show: a key's name, a token's subject
    owner: str  # the owner scope of everything this principal creates


class PrincipalUser(User, BaseUser):
    """A principal as the SDK's user: its name is the owner scope the stores filter by.

    Both the SDK's `User` (gRPC call contexts, the runtime's own calls) and a
    Starlette user (HTTP: the SDK's call-context builder wraps it in
    `StarletteUser`, whose `user_name` is our `display_name`).
    """

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self.principal.owner

    @property
    def display_name(self) -> str:
        return self.principal.owner

    @property
    def identity(self) -> str:
        return self.principal.name


def acting_for(owner: str) -> ServerCallContext:
    """A call made on behalf of `owner` (the owner scope the stores filter by)."""
    return ServerCallContext(user=PrincipalUser(Principal(name=owner, owner=owner)))


def runtime_context() -> ServerCallContext:
    """The context of a runtime-internal call: the store acts as the task's owner."""
    return ServerCallContext(state={RUNTIME_CALL: True})


def is_runtime(context: ServerCallContext) -> bool:
    return bool(context.state.get(RUNTIME_CALL))


class TaskOwners:
    """The owner of each task: remembered from this process's writes, else read."""

    def __init__(
        self, *, engine: AsyncEngine | None = None, memory: InMemoryTaskStore | None = None
    ) -> None:
        self._engine = engine
        self._memory = memory
        self._known: OrderedDict[str, str] = OrderedDict()

    @property
    def engine(self) -> AsyncEngine | None:
        """The database (None for the memory store)."""
        return self._engine

    def remember(self, task_id: str, owner: str) -> None:
        self._known[task_id] = owner
        self._known.move_to_end(task_id)
        while len(self._known) > _REMEMBERED:
            self._known.popitem(last=False)

    async def owner_of(self, task_id: str) -> str | None:
        owner = self._known.get(task_id)
        if owner is not None:
            return owner
        if self._memory is not None:
            for name, tasks in memory_tasks(self._memory).items():
                if task_id in tasks:
                    return name
            return None
        if self._engine is None:
            return None
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(_TASKS.c.owner).where(_TASKS.c.id == task_id))
            ).first()
        if row is None:
            return None
        found = row[0] or ""
        self.remember(task_id, found)
        return found

    async def owners(self) -> list[str]:
        """Every owner that has tasks (for the runtime's sweep across principals)."""
        if self._memory is not None:
            return list(memory_tasks(self._memory))
        if self._engine is None:
            return [""]
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(_TASKS.c.owner).distinct())).all()
        return sorted({row[0] or "" for row in rows})

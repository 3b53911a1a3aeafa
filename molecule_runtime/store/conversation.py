"""The earlier turns of a conversation, read newest-first within a byte budget.

A conversation's tasks can hold megabytes each (long messages, long answers,
files). Loading them whole to hand an adapter a bounded history would cost
their full size per request. Here the database measures every text part in
SQL first (SQLite's json_each, PostgreSQL's json_array_elements); only the
texts of the newest messages that fit the budget are then fetched. The memory
store, whose tasks are in memory anyway, is read through `list`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from a2a.helpers.proto_helpers import get_message_text
from a2a.server.context import ServerCallContext
from a2a.server.models import TaskModel
from a2a.server.owner_resolver import resolve_user_scope
from a2a.types.a2a_pb2 import Artifact, ListTasksRequest, Role, Task
from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from molecule_runtime.store.observed import ObservedTaskStore

Turn = tuple[str, str]  # (role, text)

# At most this many of the conversation's latest tasks are looked at.
MAX_TASKS = 50
_TASKS = TaskModel.__table__
_USER_ROLE = Role.Name(Role.ROLE_USER)

# Text parts of a task's user messages (kind 0) and its artifacts (kind 1):
# position and UTF-8 size, or the text itself.
_SQLITE_PARTS = """
SELECT t.id AS task_id, 0 AS kind, m.key AS item, p.key AS part, {value} AS value
FROM tasks AS t, json_each(t.history) AS m, json_each(m.value, '$.parts') AS p
WHERE t.id IN :ids AND json_extract(m.value, '$.role') = :user
  AND json_type(p.value, '$.text') = 'text' AND m.key >= :from_item
UNION ALL
SELECT t.id, 1, a.key, p.key, {value}
FROM tasks AS t, json_each(t.artifacts) AS a, json_each(a.value, '$.parts') AS p
WHERE t.id IN :ids AND :answer AND json_type(p.value, '$.text') = 'text'
ORDER BY 1, 2, 3, 4
"""
_SQLITE_SIZE = "length(CAST(json_extract(p.value, '$.text') AS BLOB))"
_SQLITE_TEXT = "json_extract(p.value, '$.text')"

_POSTGRES_PARTS = """
SELECT t.id AS task_id, 0 AS kind, m.ord - 1 AS item, p.ord - 1 AS part, {value} AS value
FROM tasks AS t
CROSS JOIN LATERAL json_array_elements(t.history) WITH ORDINALITY AS m(value, ord)
CROSS JOIN LATERAL json_array_elements(m.value -> 'parts') WITH ORDINALITY AS p(value, ord)
WHERE t.id IN :ids AND m.value ->> 'role' = :user
  AND p.value ->> 'text' IS NOT NULL AND m.ord - 1 >= :from_item
UNION ALL
SELECT t.id, 1, a.ord - 1, p.ord - 1, {value}
FROM tasks AS t
CROSS JOIN LATERAL json_array_elements(t.artifacts) WITH ORDINALITY AS a(value, ord)
CROSS JOIN LATERAL json_array_elements(a.value -> 'parts') WITH ORDINALITY AS p(value, ord)
WHERE t.id IN :ids AND :answer AND p.value ->> 'text' IS NOT NULL
ORDER BY 1, 2, 3, 4
"""
_POSTGRES_SIZE = "octet_length(p.value ->> 'text')"
_POSTGRES_TEXT = "p.value ->> 'text'"


@dataclass
class _Message:
    """One message of the history as the database measured it."""

    kind: int  # 0: a user message (item = its index in history), 1: the answer
    item: int
    size: int


# The agent's text of a turn: each artifact's text parts joined as streamed,
# the artifacts with text joined by this, in artifact order.
ARTIFACT_SEPARATOR = "\n"


def reply_text(artifacts: Iterable[Artifact]) -> str:
    """The agent's reply as history text: every artifact with text (answer and named
    ones; one a retry emptied has none), in artifact order."""
    texts = ("".join(p.text for p in a.parts if p.text) for a in artifacts)
    return ARTIFACT_SEPARATOR.join(t for t in texts if t)


def _messages(rows: list[tuple[int, int, int, int]]) -> list[_Message]:
    """Part sizes grouped into the task's turns, in history order: user messages
    (text parts joined by a newline), then the answer (`reply_text`)."""
    users: dict[int, list[int]] = {}
    artifacts: dict[int, int] = {}
    for kind, item, _part, size in rows:
        if kind == 0:
            users.setdefault(int(item), []).append(int(size or 0))
        else:
            artifacts[int(item)] = artifacts.get(int(item), 0) + int(size or 0)
    turns = [
        _Message(0, item, sum(sizes) + len(sizes) - 1)
        for item, sizes in sorted(users.items())
        if sum(sizes)
    ]
    with_text = [size for size in artifacts.values() if size]
    if with_text:
        turns.append(_Message(1, -1, sum(with_text) + len(with_text) - 1))
    return turns


def _texts(rows: list[tuple[int, int, int, str]]) -> list[Turn]:
    users: dict[int, list[str]] = {}
    artifacts: dict[int, list[str]] = {}
    for kind, item, _part, value in rows:
        target = users if kind == 0 else artifacts
        target.setdefault(int(item), []).append(value or "")
    turns: list[Turn] = [("user", "\n".join(parts)) for _, parts in sorted(users.items())]
    turns = [turn for turn in turns if turn[1]]
    texts = ("".join(parts) for _, parts in sorted(artifacts.items()))
    answer = ARTIFACT_SEPARATOR.join(t for t in texts if t)
    if answer:
        turns.append(("assistant", answer))
    return turns


class _DatabaseReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        postgres = engine.dialect.name == "postgresql"
        parts = _POSTGRES_PARTS if postgres else _SQLITE_PARTS
        ids = bindparam("ids", expanding=True)
        size, value = (_POSTGRES_SIZE, _POSTGRES_TEXT) if postgres else (_SQLITE_SIZE, _SQLITE_TEXT)
        self._sizes = text(parts.format(value=size)).bindparams(ids)
        self._texts = text(parts.format(value=value)).bindparams(ids)

    async def turns(
        self, context_id: str, owner: str, exclude_task_id: str, budget: int, max_messages: int
    ) -> list[Turn]:
        newest_first = (
            select(_TASKS.c.id)
            .where(
                _TASKS.c.context_id == context_id,
                _TASKS.c.owner == owner,
                _TASKS.c.id != exclude_task_id,
            )
            # The memory store's `list` order (status timestamp, then id; none last).
            .order_by(_TASKS.c.last_updated.desc().nulls_last(), _TASKS.c.id.desc())
            .limit(MAX_TASKS)
        )
        kept: list[list[Turn]] = []  # per task, newest task first
        used = count = 0
        async with self.engine.connect() as conn:
            ids = list((await conn.execute(newest_first)).scalars())
            # Measured a few tasks at a time: one round trip for most conversations,
            # and a conversation of huge messages is cut after its newest task.
            for batch in _batches(ids):
                sized = _by_task(await self._rows(conn, self._sizes, batch, 0, True))
                whole: list[str] = []
                cut: tuple[str, int, bool] | None = None
                for task_id in batch:
                    messages = _messages(sized.get(task_id, []))
                    # Newest message first; the first one that does not fit ends the history.
                    first_kept = len(messages)
                    for index in range(len(messages) - 1, -1, -1):
                        if used + messages[index].size > budget or count >= max_messages:
                            break
                        used += messages[index].size
                        count += 1
                        first_kept = index
                    if first_kept == 0:
                        whole.append(task_id)
                        continue
                    chosen = messages[first_kept:]
                    users = [m.item for m in chosen if m.kind == 0]
                    answer = any(m.kind == 1 for m in chosen)
                    cut = (task_id, min(users) if users else 1 << 30, answer)
                    break
                texts = _by_task(await self._rows(conn, self._texts, whole, 0, True))
                if cut is not None:
                    task_id, from_item, answer = cut
                    texts.update(
                        _by_task(await self._rows(conn, self._texts, [task_id], from_item, answer))
                    )
                    whole.append(task_id)
                kept.extend(_texts(texts.get(task_id, [])) for task_id in whole)
                if cut is not None:
                    break
        return [turn for task_turns in reversed(kept) for turn in task_turns]

    async def _rows(
        self, conn: AsyncConnection, query: object, ids: list[str], from_item: int, answer: bool
    ) -> list:
        if not ids:
            return []
        params = {"ids": ids, "user": _USER_ROLE, "from_item": from_item, "answer": answer}
        return list((await conn.execute(query, params)).all())  # type: ignore[call-overload]


def _batches(ids: list[str]) -> list[list[str]]:
    sizes = (1, 7)
    batches, start = [], 0
    for size in sizes:
        if start < len(ids):
            batches.append(ids[start : start + size])
        start += size
    if start < len(ids):
        batches.append(ids[start:])
    return batches


def _by_task(rows: list) -> dict[str, list]:
    """Rows of several tasks, each task's own (without the task id column)."""
    grouped: dict[str, list] = {}
    for task_id, *row in rows:
        grouped.setdefault(task_id, []).append(tuple(row))
    return grouped


def text_bytes(value: str) -> int:
    """UTF-8 size of `value`, without copying ASCII text."""
    return len(value) if value.isascii() else len(value.encode())


def bounded_history(turns: list[Turn], budget: int, max_messages: int) -> list[Turn]:
    """The newest messages of `turns` that fit in `budget` bytes, oldest first.

    The cut falls between whole messages: the first (newest-first) message that
    does not fit ends the history, so it never has a gap.
    """
    kept: list[Turn] = []
    used = 0
    for role, message_text in reversed(turns[-max_messages:] if max_messages else []):
        used += text_bytes(message_text)
        if used > budget:
            break
        kept.append((role, message_text))
    kept.reverse()
    return kept


def turns_of_tasks(tasks: list[Task]) -> list[Turn]:
    """Each task's user messages, then its answer (`reply_text`), oldest task first."""
    turns: list[Turn] = []
    for task in tasks:
        for message in task.history:
            if message.role == Role.ROLE_USER:
                message_text = get_message_text(message)
                if message_text:
                    turns.append(("user", message_text))
        answer = reply_text(task.artifacts)
        if answer:
            turns.append(("assistant", answer))
    return turns


async def conversation_turns(
    store: ObservedTaskStore,
    context_id: str,
    exclude_task_id: str,
    context: ServerCallContext,
    *,
    budget: int,
    max_messages: int,
) -> list[Turn]:
    """The conversation's earlier messages, oldest first: each task's user
    messages then its answer, the newest ones that fit `budget` bytes.

    `exclude_task_id` is the task being run (its own turns come from the task).
    Only the owner's tasks are read: conversations are owner-scoped.
    """
    context = await store.as_owner(exclude_task_id, context)
    engine = store.owners.engine
    if engine is not None:
        reader = _DatabaseReader(engine)
        owner = resolve_user_scope(context)
        return await reader.turns(context_id, owner, exclude_task_id, budget, max_messages)
    # One more than MAX_TASKS: the task being run may be among them.
    page = await store.list(
        ListTasksRequest(context_id=context_id, include_artifacts=True, page_size=MAX_TASKS + 1),
        context,
    )
    # `list` gives newest first, in the database reader's order.
    newest_first = [t for t in page.tasks if t.id != exclude_task_id][:MAX_TASKS]
    return bounded_history(turns_of_tasks(newest_first[::-1]), budget, max_messages)

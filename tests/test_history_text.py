"""The history text of a turn is one rule wherever it is read: every artifact of the
turn with text (answer and named ones, in artifact order; one a retry emptied, or one
with only files or data, adds nothing). Earlier turns of the same task (inputs.py) and
earlier tasks of the conversation (the SQL readers and the memory store) agree, and the
stores order the conversation's tasks alike (status time, then id)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from a2a.server.cluster import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import Artifact, Message, Part, Role, Task, TaskState, TaskStatus

from molecule_runtime.execution.inputs import earlier_turns
from molecule_runtime.store import open_stores
from molecule_runtime.store.conversation import conversation_turns
from molecule_runtime.vocabulary import Meta

CONTEXT = ServerCallContext()


def _user(text: str) -> Message:
    return Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])


def _question(text: str) -> Message:
    message = Message(role=Role.ROLE_AGENT, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
    message.metadata.update({Meta.MESSAGE_KIND: Meta.QUESTION})
    return message


def _artifacts(answer_id: str) -> list[Artifact]:
    """A turn's artifacts as a retried attempt leaves them: the answer in two chunks, a
    named text artifact with a file before its text, a data-only artifact and a named
    artifact the retry emptied."""
    return [
        Artifact(artifact_id=answer_id, name="answer", parts=[Part(text="Your report "), Part(text="is ready.")]),
        Artifact(
            artifact_id=f"{answer_id}.report",
            name="report",
            parts=[Part(raw=b"a,b\n", filename="r.csv"), Part(text="Generated from 2 rows.")],
        ),
        Artifact(artifact_id=f"{answer_id}.summary", name="summary", parts=[Part(text="")]),
        Artifact(artifact_id=f"{answer_id}.stale", name="stale", parts=[Part(text="")]),
    ]


REPLY = "Your report is ready.\nGenerated from 2 rows."


def _task(context_id: str, at: datetime, user: str, *, task_id: str = "") -> Task:
    task_id = task_id or str(uuid.uuid4())
    task = Task(id=task_id, context_id=context_id, status=TaskStatus(state=TaskState.TASK_STATE_COMPLETED))
    task.status.timestamp.FromDatetime(at)
    task.history.append(_user(user))
    task.artifacts.extend(_artifacts(f"{task_id}-answer"))
    return task


def test_earlier_turns_of_a_task_read_every_text_artifact_of_the_turn() -> None:
    task = Task(id="t", context_id="c")
    task.history.extend([_user("first"), _question("Which file?"), _user("that one")])
    task.artifacts.extend(_artifacts("t-answer"))
    # The second turn's artifacts are not the first turn's reply.
    task.artifacts.append(Artifact(artifact_id="t-answer-2", parts=[Part(text="turn two")]))
    task.artifacts.append(Artifact(artifact_id="t-answer-2.report", parts=[Part(text="report two")]))
    skip = task.history[-1].message_id
    assert earlier_turns(task, skip) == [
        ("user", "first"),
        ("assistant", f"{REPLY} Which file?"),
    ]
    task.history.extend([_question("And then?"), _user("done")])
    assert earlier_turns(task, task.history[-1].message_id)[-1] == (
        "assistant",
        "turn two\nreport two And then?",
    )


async def _check_store(url: str) -> None:
    stores = await open_stores(url)
    try:
        context_id = str(uuid.uuid4())
        start = datetime.now(UTC) - timedelta(minutes=5)
        older = _task(context_id, start, "older")
        # Two tasks updated at the same instant: ordered by id in every store.
        tied = [
            _task(context_id, start + timedelta(seconds=1), f"tied {n}", task_id=n + str(uuid.uuid4())[1:])
            for n in ("b", "a")
        ]
        current = _task(context_id, start + timedelta(seconds=2), "now")
        for task in [older, *tied, current]:
            await stores.tasks.save(task, prev_version=TaskVersion.MISSING, context=CONTEXT)
        turns = await conversation_turns(
            stores.tasks, context_id, current.id, CONTEXT, budget=1 << 20, max_messages=40
        )
        assert turns == [
            ("user", "older"), ("assistant", REPLY),
            ("user", "tied a"), ("assistant", REPLY),
            ("user", "tied b"), ("assistant", REPLY),
        ]
        # The budget counts the reply as the adapter gets it (separators included).
        cut = await conversation_turns(
            stores.tasks, context_id, current.id, CONTEXT, budget=len(REPLY), max_messages=40
        )
        assert cut == [("assistant", REPLY)]
        cut = await conversation_turns(
            stores.tasks, context_id, current.id, CONTEXT, budget=len(REPLY) - 1, max_messages=40
        )
        assert cut == []
        # The same reply as the task's own earlier turns read.
        single = _task(context_id, start, "x")
        single.history.extend([_question("q?"), _user("y")])
        assert earlier_turns(single, single.history[-1].message_id)[1] == ("assistant", f"{REPLY} q?")
    finally:
        await stores.aclose()


async def test_sqlite(tmp_path) -> None:
    await _check_store(f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}")


async def test_memory() -> None:
    await _check_store("memory")


async def test_postgres(postgres) -> None:
    await _check_store(postgres.database())

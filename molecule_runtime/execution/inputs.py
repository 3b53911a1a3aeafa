"""Builds the serialisable `TaskInput` from an A2A request."""

from __future__ import annotations

from typing import Any

from a2a.helpers.proto_helpers import get_message_text
from a2a.server.agent_execution import RequestContext
from a2a.types.a2a_pb2 import Message, Role, Task
from google.protobuf import json_format

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.execution.events import artifact_id_for
from molecule_runtime.vocabulary import Meta

MAX_HISTORY_MESSAGES = 40
# The history handed to an adapter holds at most this many bytes (UTF-8 text):
# the newest whole messages that fit (MOLECULE_HISTORY_BYTES).
DEFAULT_HISTORY_BYTES = 256 * 1024


def text_bytes(text: str) -> int:
    """UTF-8 size of `text`, without copying ASCII text."""
    return len(text) if text.isascii() else len(text.encode())


def bounded_history(
    turns: list[tuple[str, str]], budget: int, max_messages: int = MAX_HISTORY_MESSAGES
) -> list[tuple[str, str]]:
    """The newest messages of `turns` that fit in `budget` bytes, oldest first.

    The cut falls between whole messages: the first (newest-first) message that
    does not fit ends the history, so it never has a gap.
    """
    kept: list[tuple[str, str]] = []
    used = 0
    for role, text in reversed(turns[-max_messages:]):
        used += text_bytes(text)
        if used > budget:
            break
        kept.append((role, text))
    kept.reverse()
    return kept


def _role(message: Message) -> str:
    return "assistant" if message.role == Role.ROLE_AGENT else "user"


def history_from_tasks(tasks: list[Task], current_task_id: str) -> list[tuple[str, str]]:
    """Earlier turns of a conversation: each task's user text and its answer."""
    turns: list[tuple[str, str]] = []
    for task in tasks:
        if task.id == current_task_id:
            continue
        for message in task.history:
            if message.role == Role.ROLE_USER:
                text = get_message_text(message)
                if text:
                    turns.append(("user", text))
        answer = "".join(
            part.text for artifact in task.artifacts for part in artifact.parts if part.text
        )
        if answer:
            turns.append(("assistant", answer))
    return turns[-MAX_HISTORY_MESSAGES:]


def _is_question(message: Message) -> bool:
    return (
        message.HasField("metadata")
        and Meta.MESSAGE_KIND in message.metadata
        and message.metadata[Meta.MESSAGE_KIND] == Meta.QUESTION
    )


def earlier_turns(task: Task, skip_message_id: str) -> list[tuple[str, str]]:
    """The turns of an input-required task so far: each user message, then the
    agent's reply to it (the text it streamed, then its question)."""
    users = [
        get_message_text(m)
        for m in task.history
        if m.role == Role.ROLE_USER and m.message_id != skip_message_id
    ]
    questions = [get_message_text(m) for m in task.history if _is_question(m)]
    if task.status.HasField("message") and _is_question(task.status.message):
        questions.append(get_message_text(task.status.message))
    answers = {a.artifact_id: "".join(p.text for p in a.parts if p.text) for a in task.artifacts}
    turns: list[tuple[str, str]] = []
    for i, user_text in enumerate(users):
        if user_text:
            turns.append(("user", user_text))
        answer = answers.get(artifact_id_for(task.id, i + 1), "")
        question = questions[i] if i < len(questions) else ""
        reply = " ".join(part.strip() for part in (answer, question) if part.strip())
        if reply:
            turns.append(("assistant", reply))
    return turns


def turn_of(task: Task | None, skip_message_id: str) -> int:
    """1 for a new task; n+1 when the user answers the n-th question of a task."""
    if task is None:
        return 1
    earlier = [m for m in task.history if m.role == Role.ROLE_USER and m.message_id != skip_message_id]
    return len(earlier) + 1


def build_task_input(
    message: Message | None,
    *,
    task_id: str,
    context_id: str,
    current_task: Task | None,
    history: list[tuple[str, str]],
    request_metadata: dict[str, Any],
    history_bytes: int = DEFAULT_HISTORY_BYTES,
) -> TaskInput:
    """The adapter's input for `message`, the user's message of this turn.

    The request path and the durable stages (which rebuild it from the task
    store) both call this, so an adapter sees the same input in every mode.
    `current_task` is the task the message continues (None for a new task),
    `history` the conversation's earlier tasks, oldest first.
    """
    metadata: dict = {}
    if message is not None and message.HasField("metadata"):
        metadata.update(json_format.MessageToDict(message.metadata))
    metadata.update(request_metadata)
    if current_task is not None:
        skip = message.message_id if message is not None else ""
        history = history + earlier_turns(current_task, skip)
    return TaskInput(
        task_id=task_id,
        context_id=context_id,
        text=get_message_text(message) if message is not None else "",
        history=bounded_history(history, history_bytes),
        metadata=metadata,
        attempt=1,
    )


def request_task_input(
    context: RequestContext, history: list[tuple[str, str]], history_bytes: int
) -> TaskInput:
    """The adapter's input for an A2A request."""
    return build_task_input(
        context.message,
        task_id=str(context.task_id),
        context_id=str(context.context_id),
        current_task=context.current_task,
        history=history,
        request_metadata=context.metadata,
        history_bytes=history_bytes,
    )

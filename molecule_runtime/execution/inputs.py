"""Builds the serialisable `TaskInput`: from an A2A request, or from the task store
(durable stages and the start-up sweep rebuild it from ids)."""

from __future__ import annotations

from typing import Any

from a2a.helpers.proto_helpers import get_message_text
from a2a.server.agent_execution import RequestContext
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import Message, Role, Task
from google.protobuf import json_format

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.execution.events import artifact_id_for, of_turn
from molecule_runtime.execution.parts import input_parts
from molecule_runtime.store.conversation import bounded_history, conversation_turns, reply_text
from molecule_runtime.store.observed import ObservedTaskStore
from molecule_runtime.store.owners import runtime_context
from molecule_runtime.vocabulary import Meta

MAX_HISTORY_MESSAGES = 40
# The history handed to an adapter holds at most this many bytes (UTF-8 text):
# the newest whole messages that fit (MOLECULE_HISTORY_BYTES).
DEFAULT_HISTORY_BYTES = 256 * 1024


def _is_question(message: Message) -> bool:
    return (
        message.HasField("metadata")
        and Meta.MESSAGE_KIND in message.metadata
        and message.metadata[Meta.MESSAGE_KIND] == Meta.QUESTION
    )


def earlier_turns(task: Task, skip_message_id: str) -> list[tuple[str, str]]:
    """The turns of an input-required task so far: each user message, then the
    agent's reply to it (the turn's artifacts as `reply_text` reads them, then its
    question)."""
    users = [
        get_message_text(m)
        for m in task.history
        if m.role == Role.ROLE_USER and m.message_id != skip_message_id
    ]
    questions = [get_message_text(m) for m in task.history if _is_question(m)]
    if task.status.HasField("message") and _is_question(task.status.message):
        questions.append(get_message_text(task.status.message))
    turns: list[tuple[str, str]] = []
    for i, user_text in enumerate(users):
        if user_text:
            turns.append(("user", user_text))
        answer_id = artifact_id_for(task.id, i + 1)
        answer = reply_text(a for a in task.artifacts if of_turn(answer_id, a.artifact_id))
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
        history=bounded_history(history, history_bytes, MAX_HISTORY_MESSAGES),
        metadata=metadata,
        attempt=1,
        message_id=message.message_id if message is not None else "",
        parts=input_parts(message.parts) if message is not None else [],
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


async def conversation_history(
    store: ObservedTaskStore,
    context_id: str,
    task_id: str,
    call_context: ServerCallContext,
    history_bytes: int,
) -> list[tuple[str, str]]:
    """The conversation's earlier tasks (A2A context), newest that fit the budget."""
    return await conversation_turns(
        store,
        context_id,
        task_id,
        call_context,
        budget=history_bytes,
        max_messages=MAX_HISTORY_MESSAGES,
    )


class InputNotStored(LookupError):
    """The task, or the user's message of this turn, is not in the store (yet)."""


def request_metadata_record(message_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Task metadata keeping a turn's request metadata for inputs rebuilt from the store."""
    return {Meta.REQUEST: {"message_id": message_id, "metadata": metadata}}


def _stored_request_metadata(task: Task, message_id: str) -> dict[str, Any]:
    if Meta.REQUEST not in task.metadata:
        return {}
    record = json_format.MessageToDict(task.metadata[Meta.REQUEST])
    if not isinstance(record, dict) or record.get("message_id") != message_id:
        return {}
    metadata = record.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


async def load_task_input(
    store: ObservedTaskStore, task_id: str, message_id: str, history_bytes: int
) -> TaskInput:
    """The adapter's input for one turn of a stored task, rebuilt as the request
    path built it: the user's message `message_id` (empty: the task's latest),
    the turns before it, the conversation and the request's metadata."""
    stored = await store.get(task_id, runtime_context())
    if stored is None:
        raise InputNotStored(f"task {task_id} is not in the task store")
    task = stored.task
    users = [
        i
        for i, m in enumerate(task.history)
        if m.role == Role.ROLE_USER and (m.message_id == message_id or not message_id)
    ]
    if not users:
        raise InputNotStored(f"task {task_id} has no stored message {message_id!r}")
    index = users[-1]
    message = task.history[index]
    # The task as it stood when this message arrived.
    before = Task()
    before.CopyFrom(task)
    del before.history[index:]
    history = await conversation_history(
        store, task.context_id, task.id, runtime_context(), history_bytes
    )
    return build_task_input(
        message,
        task_id=task.id,
        context_id=task.context_id,
        current_task=before if index > 0 else None,
        history=history,
        request_metadata=_stored_request_metadata(task, message.message_id),
        history_bytes=history_bytes,
    )

"""Builds the serialisable `TaskInput` from an A2A request."""

from __future__ import annotations

from a2a.helpers.proto_helpers import get_message_text
from a2a.server.agent_execution import RequestContext
from a2a.types.a2a_pb2 import Message, Role, Task
from google.protobuf import json_format

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.execution.events import artifact_id_for
from molecule_runtime.vocabulary import Meta

MAX_HISTORY_MESSAGES = 40


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


def build_task_input(context: RequestContext, history: list[tuple[str, str]]) -> TaskInput:
    message = context.message
    metadata: dict = {}
    if message is not None and message.HasField("metadata"):
        metadata.update(json_format.MessageToDict(message.metadata))
    metadata.update(context.metadata)
    if context.current_task is not None:
        skip = message.message_id if message is not None else ""
        history = history + earlier_turns(context.current_task, skip)
    return TaskInput(
        task_id=str(context.task_id),
        context_id=str(context.context_id),
        text=context.get_user_input(),
        history=history[-MAX_HISTORY_MESSAGES:],
        metadata=metadata,
        attempt=1,
    )

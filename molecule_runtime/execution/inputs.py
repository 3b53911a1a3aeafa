"""Builds the serialisable `TaskInput` from an A2A request."""

from __future__ import annotations

from a2a.helpers.proto_helpers import get_message_text
from a2a.server.agent_execution import RequestContext
from a2a.types.a2a_pb2 import Message, Role, Task
from google.protobuf import json_format

from molecule_runtime.adapters.base import TaskInput

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


def build_task_input(context: RequestContext, history: list[tuple[str, str]]) -> TaskInput:
    message = context.message
    metadata: dict = {}
    if message is not None and message.HasField("metadata"):
        metadata.update(json_format.MessageToDict(message.metadata))
    metadata.update(context.metadata)
    # Messages already on this task (a follow-up turn of the same task).
    if context.current_task is not None:
        prior = [
            (_role(m), get_message_text(m))
            for m in context.current_task.history
            if message is None or m.message_id != message.message_id
        ]
        history = history + [(role, text) for role, text in prior if text]
    return TaskInput(
        task_id=str(context.task_id),
        context_id=str(context.context_id),
        text=context.get_user_input(),
        history=history[-MAX_HISTORY_MESSAGES:],
        metadata=metadata,
        attempt=1,
    )

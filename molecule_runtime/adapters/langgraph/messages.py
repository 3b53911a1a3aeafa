"""The task's conversation as LangChain messages: the history within the
model's context, the new user message, and what the graph added in this turn."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.adapters.langgraph.content import ModelInputs, user_content

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage


def trim_history(task: TaskInput, char_budget: int) -> TaskInput:
    """A copy of `task` without its oldest turns, so history plus message fit the budget."""
    used = len(task.text)
    keep = 0
    for _, text in reversed(task.history):
        if used + len(text) > char_budget:
            break
        used += len(text)
        keep += 1
    if keep == len(task.history):
        return task
    history = task.history[len(task.history) - keep :]
    # Start on a user turn: a conversation that opens with an answer confuses models.
    while history and history[0][0] != "user":
        history = history[1:]
    return dataclasses.replace(task, history=history)


def to_messages(task: TaskInput, inputs: ModelInputs | None = None) -> list[BaseMessage]:
    """Earlier turns of the conversation, then the new user message (its data
    parts as JSON text, files as notes or, for a model that reads them, images)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    messages: list[BaseMessage] = []
    for role, text in task.history:
        if role in ("assistant", "agent", "ai"):
            messages.append(AIMessage(content=text))
        elif role == "system":
            messages.append(SystemMessage(content=text))
        else:
            messages.append(HumanMessage(content=text))
    messages.append(HumanMessage(content=user_content(task, inputs or ModelInputs())))  # type: ignore[arg-type]
    return messages


def turn_messages(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The messages the graph added in this turn: those after the last user message."""
    last_user = max((i for i, m in enumerate(messages) if m.type == "human"), default=-1)
    return list(messages[last_user + 1 :])


def _message_text(message: BaseMessage) -> str:
    """The text a model call streamed, as `_stream_text` saw it (text blocks only)."""
    return str(message.text or "")

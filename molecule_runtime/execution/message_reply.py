"""Message replies: an adapter that declares `replies_with_message` answers with
one A2A Message instead of a Task (quick, stateless answers).

The whole stream is collected first; only then is the Message sent. If the
adapter cannot answer that way (it raised, rejected, or asked a question) the
request gets a Task in that final state instead, so the client is always told.
It runs in the request's own asyncio task, in any mode: there is no task to
make durable.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.types.a2a_pb2 import Message, Part, Role, TaskState

from molecule_runtime.adapters.base import BaseAdapter, InputRequired, TaskInput
from molecule_runtime.adapters.outputs import DataOutput, Done, FileOutput, Reject, TextOutput
from molecule_runtime.execution.admission import claim
from molecule_runtime.execution.attempt import describe_error
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.execution.handoff import Handoff
from molecule_runtime.execution.parts import data_part, file_part
from molecule_runtime.execution.pull import AdapterProtocolError, checked_file
from molecule_runtime.execution.request_input import RequestInputs
from molecule_runtime.observability import metrics
from molecule_runtime.states import outcome_of
from molecule_runtime.store.message_ids import MessageIds
from molecule_runtime.vocabulary import Meta, Mode, Outcome

log = logging.getLogger(__name__)

NO_QUESTIONS = "This agent replies with messages; it cannot ask a question (InputRequired)."


@dataclass
class Reply:
    """A Message to send, or (when `state` is set) the final state of a Task instead."""

    parts: list[Part] = field(default_factory=list)
    state: TaskState | None = None
    text: str = ""


def _add_text(parts: list[Part], text: str) -> None:
    if parts and parts[-1].WhichOneof("content") == "text":
        parts[-1].text += text
    else:
        parts.append(Part(text=text))


async def collect_reply(adapter: BaseAdapter, task: TaskInput, max_file_bytes: int) -> Reply:
    """Run the adapter's stream to its end; what to answer with."""
    parts: list[Part] = []
    stream = adapter.stream(task)
    try:
        async for item in stream:
            if isinstance(item, str | TextOutput):
                text = item if isinstance(item, str) else item.text
                if text:
                    _add_text(parts, text)
            elif isinstance(item, FileOutput):
                parts.append(file_part(checked_file(item, max_file_bytes)))
            elif isinstance(item, DataOutput):
                parts.append(data_part(item))
            elif isinstance(item, Done):
                if item.message:
                    _add_text(parts, ("\n\n" if parts else "") + item.message)
                break
            elif isinstance(item, Reject):
                return Reply(state=TaskState.TASK_STATE_REJECTED, text=item.reason or "Rejected.")
            elif isinstance(item, InputRequired):
                return Reply(state=TaskState.TASK_STATE_FAILED, text=NO_QUESTIONS)
            else:
                raise AdapterProtocolError(f"yielded {type(item).__name__}")
    except Exception as exc:
        log.warning("task %s failed: %s", task.task_id, describe_error(exc))
        return Reply(state=TaskState.TASK_STATE_FAILED, text=describe_error(exc))
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
    if not parts:
        parts.append(Part(text=""))
    return Reply(parts=parts)


def reply_message(task: TaskInput, parts: list[Part]) -> Message:
    """The agent's Message: in the request's conversation, tied to no task."""
    return Message(
        role=Role.ROLE_AGENT,
        message_id=str(uuid.uuid4()),
        context_id=task.context_id,
        parts=parts,
    )


async def reply_to_request(
    adapter: BaseAdapter,
    context: RequestContext,
    handoff: Handoff,
    events: TaskEvents,
    event_queue: EventQueue,
    *,
    inputs: RequestInputs,
    max_file_bytes: int,
    message_ids: MessageIds | None,
    instance_id: str,
) -> None:
    """Answer the request with the adapter's Message; with a Task only when it
    could not answer that way (rejected, failed)."""
    ticket = claim(handoff.ticket)
    try:
        if ticket is not None and not ticket.try_start():
            await ticket.start()
        task = await inputs.of(context)
        reply = await collect_reply(adapter, task, max_file_bytes)
    finally:
        if ticket is not None:
            ticket.release()
    if reply.state is None:
        message = reply_message(task, reply.parts)
        # Kept for a repeat of the request, before the client can see it.
        taken = handoff.claim
        if message_ids is not None and taken is not None and taken.replies:
            await message_ids.set_reply(taken, message.SerializeToString())
        await event_queue.enqueue_event(message)
        metrics.TASKS.labels(Outcome.COMPLETED, Mode.DIRECT).inc()
        return
    await events.created(context.message, metadata={Meta.INSTANCE: instance_id})
    await events.status(reply.state, reply.text)
    metrics.TASKS.labels(outcome_of(reply.state) or Outcome.FAILED, Mode.DIRECT).inc()

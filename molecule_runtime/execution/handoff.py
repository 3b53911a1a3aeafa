"""The hand-off from the request handler to dispatch: what was decided about a
message before its task existed, as one typed object.

The SDK builds the executor's `RequestContext` itself; the one thing of the
request it carries over is the call context's `state`. So the handler's
decisions travel there, under one key, as one frozen `Handoff`: the submission
rules' (server/submission.py) and admission's ticket (execution/admission.py),
put there by the send gate (server/send_gate.py) and taken over by dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from a2a.server.context import ServerCallContext

if TYPE_CHECKING:
    # Types only: the hand-off carries these, it never calls them.
    from molecule_runtime.execution.admission import Ticket
    from molecule_runtime.store.claims_table import MessageClaim

_KEY = "molecule.handoff"


@dataclass(frozen=True)
class Handoff:
    # False when the client started a new conversation: no history to read.
    continues_context: bool = True
    # The id claimed for the message's new task (None: an answer, or no rules).
    task_id: str | None = None
    # The message's claimed id: kept for a repeat, given back if it is not taken.
    claim: MessageClaim | None = None
    # Whether the adapter answers a new task's message with a Message, decided
    # once by the submission rules (None: not decided, the adapter's flag holds).
    replies_with_message: bool | None = None
    # The place in line admission control gave the request.
    ticket: Ticket | None = None


def attach(context: ServerCallContext, handoff: Handoff) -> None:
    """Hand `handoff` to the dispatch of the request of `context` (replacing any)."""
    context.state[_KEY] = handoff


def attached(context: ServerCallContext) -> Handoff | None:
    """What was handed over with the request of `context`, if anything."""
    handoff = context.state.get(_KEY)
    return handoff if isinstance(handoff, Handoff) else None

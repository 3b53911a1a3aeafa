"""The SDK's `RequestContext` of a request, built with what the request handler
handed over (execution/handoff.py)."""

from __future__ import annotations

from a2a.server.agent_execution import RequestContext, SimpleRequestContextBuilder
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import SendMessageRequest, Task

from molecule_runtime.execution.handoff import Handoff, attach, attached


class ConversationContextBuilder(SimpleRequestContextBuilder):
    """Notes whether the client named an existing conversation (context id),
    and gives a new task the id its message was claimed for (submission.py).

    A new conversation has no earlier turns, so dispatch can skip the history
    look-up in the task store for it.
    """

    async def build(
        self,
        context: ServerCallContext,
        params: SendMessageRequest | None = None,
        task_id: str | None = None,
        context_id: str | None = None,
        task: Task | None = None,
    ) -> RequestContext:
        handoff = attached(context)
        if handoff is None:
            # No submission rules noted it (they fill in ids, so they note it first).
            handoff = Handoff(continues_context=bool(context_id or task_id))
            attach(context, handoff)
        task_id = task_id or handoff.task_id
        return await super().build(context, params, task_id, context_id, task)

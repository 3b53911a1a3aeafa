"""The adapter's input for a request run in this process: its message, and the
history of its conversation within the byte budget (durable stages rebuild
theirs from the store, execution/inputs.py `load_task_input`)."""

from __future__ import annotations

import functools
import logging

from a2a.server.agent_execution import RequestContext

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.execution.handoff import attached
from molecule_runtime.execution.inputs import conversation_history, request_task_input
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.health import until_stored

log = logging.getLogger(__name__)


class RequestInputs:
    def __init__(self, store: ObservedTaskStore, history_bytes: int) -> None:
        self.store = store
        self.history_bytes = history_bytes

    async def history(self, context: RequestContext) -> list[tuple[str, str]]:
        """Earlier tasks of the same conversation (A2A context), within the byte budget."""
        read = functools.partial(
            conversation_history,
            self.store,
            str(context.context_id),
            str(context.task_id),
            context.call_context,
            self.history_bytes,
        )
        try:
            # A store that is away for now is waited for, not read as "no history".
            return await until_stored(read, self.store.health)
        except Exception:
            log.exception("could not read the history of context %s", context.context_id)
            return []

    async def of(self, context: RequestContext) -> TaskInput:
        """The request's input; a new conversation has no history to look up."""
        handoff = attached(context.call_context)
        continues = handoff.continues_context if handoff is not None else True
        history = await self.history(context) if continues else []
        return request_task_input(context, history, self.history_bytes)

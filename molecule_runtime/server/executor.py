"""The runtime's a2a-sdk `AgentExecutor`: the SDK calls it with each request's
context and event queue; it hands them over to dispatch (execution/dispatch.py)."""

from __future__ import annotations

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue

from molecule_runtime.execution.dispatch import Dispatch


class RuntimeExecutor(AgentExecutor):
    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        await self.dispatch.execute(context, event_queue)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        if context.task_id:
            await self.dispatch.cancel(str(context.task_id))

"""The SDK's request handler, plus workflow cancellation for tasks not running here."""

from __future__ import annotations

from a2a.server.agent_execution import RequestContext, SimpleRequestContextBuilder
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    SendMessageRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError

from molecule_runtime.execution.events import TERMINAL_STATES
from molecule_runtime.execution.executor import CONTINUES_CONTEXT, DurableRunner


class ConversationContextBuilder(SimpleRequestContextBuilder):
    """Notes whether the client named an existing conversation (context id).

    A new conversation has no earlier turns, so the executor can skip the
    history look-up in the task store for it.
    """

    async def build(
        self,
        context: ServerCallContext,
        params: SendMessageRequest | None = None,
        task_id: str | None = None,
        context_id: str | None = None,
        task: Task | None = None,
    ) -> RequestContext:
        context.state[CONTINUES_CONTEXT] = bool(context_id or task_id)
        return await super().build(context, params, task_id, context_id, task)


class RuntimeRequestHandler(DefaultRequestHandler):
    """CancelTask also reaches tasks recovered headless (after a crash, on another worker).

    The SDK calls the executor's `cancel()` only for tasks whose stream lives in
    this process; for the others it just records CANCELED in the store, which
    would leave the workflow (and the adapter) running.
    """

    def __init__(self, *args: object, durable: DurableRunner | None = None, **kwargs: object) -> None:
        kwargs.setdefault("request_context_builder", ConversationContextBuilder())
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._durable = durable

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        if self._durable is not None and params.id:
            # Owner-scoped read first: only a caller who may see the task may cancel it.
            stored = await self._versioned_store.get(params.id, context)
            running_here = await self._active_task_registry.get(params.id) is not None
            if (
                stored is not None
                and stored.task.status.state not in TERMINAL_STATES
                and not running_here
            ):
                await self._durable.cancel(params.id)
        return await super().on_cancel_task(params, context)

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        # A numeric status outside the enum (`?status=10`) otherwise reaches the
        # store, whose TaskState.Name() raises: a 500 for a bad request.
        if params.status not in TaskState.values():
            raise InvalidParamsError(f"unknown task status {params.status}")
        return await super().on_list_tasks(params, context)

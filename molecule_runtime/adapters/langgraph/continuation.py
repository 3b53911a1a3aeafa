"""Continuing an interrupted model call: the assistant message is prefilled with
the text the earlier attempt already streamed, and the model goes on from there.

Imported by the adapter's `build_agent` only (it imports LangChain).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage
from langgraph.config import get_config

from molecule_runtime.adapters.langgraph.resume import CONTINUATION_KEY, Continuation


class ContinueAnswer(AgentMiddleware):
    """The first model call of a resumed run continues the stored prefix.

    The request ends with an assistant message holding the prefix, which
    llama.cpp's server (and other servers that prefill) continues; the tokens
    streamed are the continuation only, and the message stored in the graph's
    state is the prefix and the continuation, as one uninterrupted call would
    have written it.
    """

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        continuation = _continuation()
        prefix = continuation.take() if continuation is not None else ""
        if not prefix:
            return await handler(request)
        response = await handler(
            request.override(messages=[*request.messages, AIMessage(content=prefix)])
        )
        return ModelResponse(
            result=[_prefixed(m, prefix) for m in response.result],
            structured_response=response.structured_response,
        )


def _continuation() -> Continuation | None:
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # not inside a graph run
        return None
    value = configurable.get(CONTINUATION_KEY)
    return value if isinstance(value, Continuation) else None


def _prefixed(message: Any, prefix: str) -> Any:
    if not isinstance(message, AIMessage):
        return message
    content = message.content
    if isinstance(content, str):
        return message.model_copy(update={"content": prefix + content})
    return message.model_copy(update={"content": [{"type": "text", "text": prefix}, *content]})

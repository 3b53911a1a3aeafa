"""Built-in `langgraph` adapter: a LangChain/LangGraph tool-calling agent, streamed token by token.

LangChain, LangGraph and llama.cpp are imported inside `setup()`, never at module
import, so the runtime (and its `echo` default) starts without them installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from molecule_runtime.adapters.base import (
    AdapterConfig,
    BaseAdapter,
    NonRetryableError,
    TaskInput,
)
from molecule_runtime.adapters.genai import set_genai_attributes
from molecule_runtime.adapters.langgraph.content import ModelInputs, model_inputs, user_content
from molecule_runtime.adapters.langgraph.imports import load_target
from molecule_runtime.adapters.langgraph.models import choose_model
from molecule_runtime.adapters.langgraph.options import (
    LOCAL_MAX_TOKENS,
    LangGraphOptions,
    OptionsError,
)
from molecule_runtime.adapters.outputs import Done
from molecule_runtime.adapters.usage import report_usage

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

    from molecule_runtime.adapters.langgraph.local_llm import LocalModelServer

log = logging.getLogger(__name__)

# HTTP statuses a retry cannot fix (bad request, auth, unknown model, ...).
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 422})


class LangGraphAdapter(BaseAdapter):
    """A LangGraph agent (`langchain.agents.create_agent`) with pluggable model, prompt and tools.

    Subclass and override `load_system_prompt`, `load_tools`, `load_model` or
    `build_agent` to customise it (see `adapters/langgraph/adapter.py`).
    """

    def __init__(self) -> None:
        self.options = LangGraphOptions()
        self._agent: Any = None
        self._model_description = ""
        self._genai: tuple[str | None, str | None] = (None, None)
        self._local_server: LocalModelServer | None = None
        # Characters of conversation the model's context can take (local model only).
        self._history_char_budget: int | None = None
        # What the model reads besides text (images), from its profile.
        self._inputs = ModelInputs()

    @staticmethod
    def name() -> str:
        return "langgraph"

    def description(self) -> str:
        model = self._model_description or "a configurable chat model"
        return f"LangGraph agent on {model}, answers streamed token by token."

    # -- customisation hooks -------------------------------------------------

    def load_system_prompt(self, config: AdapterConfig) -> str:
        """`SYSTEM_PROMPT`, else the `system_prompt_file` option's text, else none."""
        return self.options.system_prompt(config)

    def load_tools(self, config: AdapterConfig) -> list[Any]:
        """Tools from the `tools_module` option (`module` → its `TOOLS`, or `module:attr`)."""
        target = self.options.tools_module
        if not target:
            return []
        tools = load_target(target, default_attr="TOOLS", setting="tools_module")
        if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence):
            raise OptionsError(
                f"tools_module={target!r} must name a list of LangChain tools, "
                f"got {type(tools).__name__}"
            )
        return list(tools)

    async def load_model(self, config: AdapterConfig) -> BaseChatModel:
        """The chat model named by `MODEL` / `model_factory` (local SmolLM2 by default)."""
        chosen = await choose_model(config, self.options)
        self._local_server = chosen.local_server
        self._model_description = chosen.description
        self._genai = genai_identity(
            chosen.description, chosen.model, factory=bool(self.options.model_factory)
        )
        if chosen.local_server is not None:
            # A small local context overflows after a few long turns; llama.cpp
            # then rejects the request. Keep the newest turns that fit, at a
            # conservative ~3 characters per token.
            reply_tokens = self.options.max_tokens or LOCAL_MAX_TOKENS
            self._history_char_budget = max(
                0, (self.options.context_size - reply_tokens) * 3 - len(self.load_system_prompt(config))
            )
        return chosen.model

    def model_inputs(self, model: BaseChatModel) -> ModelInputs:
        """What the model reads besides text, from its LangChain profile; override
        when the profile does not say (then image parts reach it as image blocks)."""
        return model_inputs(model)

    def build_agent(self, model: BaseChatModel, tools: list[Any], system_prompt: str) -> Any:
        """A compiled LangGraph graph whose state has a `messages` list."""
        from langchain.agents import create_agent

        return create_agent(model, tools, system_prompt=system_prompt or None, name=self.name())

    # -- adapter contract ----------------------------------------------------

    async def setup(self, config: AdapterConfig) -> None:
        self.options = LangGraphOptions.from_config(config)
        system_prompt = self.load_system_prompt(config)
        tools = self.load_tools(config)
        model = await self.load_model(config)
        self._inputs = self.model_inputs(model)
        try:
            self._agent = self.build_agent(model, tools, system_prompt)
        except BaseException:
            await self.aclose()
            raise
        log.info(
            "langgraph agent ready: model=%s tools=%s",
            self._model_description or type(model).__name__,
            [getattr(t, "name", getattr(t, "__name__", repr(t))) for t in tools],
        )

    async def aclose(self) -> None:
        server, self._local_server = self._local_server, None
        if server is not None:
            await server.release()

    def cut_message(self) -> str:
        """The status message of a task whose final reply hit the token limit."""
        limit = self.options.max_tokens or (LOCAL_MAX_TOKENS if self._local_server else None)
        cap = f"the {limit}-token limit" if limit else "the model's token limit"
        return (
            f"The answer stopped at {cap} (max_tokens in ADAPTER_OPTIONS): "
            "ask the agent to go on, or raise the limit."
        )

    async def stream(self, task: TaskInput) -> AsyncIterator[str | Done]:
        if self._agent is None:
            raise RuntimeError("LangGraphAdapter.stream() called before setup()")
        run_config = {
            "recursion_limit": self.options.recursion_limit,
            "run_name": self.name(),
            "metadata": {
                "task_id": task.task_id,
                "context_id": task.context_id,
                "attempt": task.attempt,
            },
        }
        if self._history_char_budget is not None:
            task = trim_history(task, self._history_char_budget)
        events = self._agent.astream_events(
            {"messages": to_messages(task, self._inputs)}, config=run_config, version="v2"
        )
        usage = {"input_tokens": 0, "output_tokens": 0}
        # Whether the latest model reply stopped at max_tokens: only the last
        # one is the answer (earlier ones chose tools).
        cut = False
        try:
            async for event in events:
                text = _stream_text(event)
                if text:
                    yield text
                elif event.get("event") == "on_chat_model_end":
                    _add_usage(usage, event, default_model=self._genai[1] or "")
                    cut = _stopped_at_limit(event)
        except Exception as exc:
            permanent = _permanent_failure(exc)
            if permanent is not None:
                raise NonRetryableError(permanent) from exc
            raise
        finally:
            # Closing the event stream cancels the graph run (and the model's
            # HTTP request) when we stop early: on cancellation or an error.
            with contextlib.suppress(Exception):
                await events.aclose()
            system, model_name = self._genai
            set_genai_attributes(
                system=system,
                request_model=model_name,
                input_tokens=usage["input_tokens"] or None,
                output_tokens=usage["output_tokens"] or None,
            )
        if cut:
            # Without this a truncated answer looks like a finished one.
            yield Done(self.cut_message())


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


def genai_identity(
    description: str, model: Any, *, factory: bool
) -> tuple[str | None, str | None]:
    """(gen_ai.system, gen_ai.request.model) for the chosen model, where known."""
    if factory or ":" not in description:
        name = getattr(model, "model_name", None) or getattr(model, "model", None)
        return None, str(name) if name else None
    provider, name = description.split(":", 1)
    return ("llama.cpp" if provider == "local" else provider), name


def _add_usage(usage: dict[str, int], event: dict[str, Any], default_model: str = "") -> None:
    """Sum the token usage a chat model reported for one call (when it reports any),
    and report it to the runtime, which stores and counts it per attempt."""
    output = (event.get("data") or {}).get("output")
    metadata = getattr(output, "usage_metadata", None) or {}
    reported = {}
    for key in usage:
        value = metadata.get(key)
        if isinstance(value, int):
            usage[key] += value
            reported[key] = value
    if reported:
        response = getattr(output, "response_metadata", None) or {}
        model = str(response.get("model_name") or response.get("model") or default_model)
        if model.startswith("/"):  # llama.cpp answers with the GGUF's path: keep its name
            model = model.rsplit("/", 1)[-1]
        report_usage(**reported, model=model)


def _stopped_at_limit(event: dict[str, Any]) -> bool:
    """Whether a chat model's reply ended because it reached max_tokens
    (OpenAI-compatible servers, llama.cpp's included, say `finish_reason: length`;
    Anthropic says `stop_reason: max_tokens`)."""
    output = (event.get("data") or {}).get("output")
    response = getattr(output, "response_metadata", None) or {}
    reason = response.get("finish_reason") or response.get("stop_reason")
    return reason in ("length", "max_tokens", "MAX_TOKENS")


def _stream_text(event: dict[str, Any]) -> str:
    """The text of a chat-model token event; tool-call chunks and other events give ''."""
    if event.get("event") != "on_chat_model_stream":
        return ""
    # LangGraph's convention for models whose tokens must not reach the user.
    if "nostream" in (event.get("tags") or ()):
        return ""
    chunk = (event.get("data") or {}).get("chunk")
    text = getattr(chunk, "text", None)
    # `.text` keeps only text content blocks: tool-call arguments never leak.
    return str(text) if text else ""


def _permanent_failure(exc: Exception) -> str | None:
    """A message when retrying cannot help (bad credentials, unknown model, loops)."""
    if type(exc).__name__ == "GraphRecursionError":
        return f"agent exceeded recursion_limit: {exc}"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status in _PERMANENT_STATUSES:
        return f"model request rejected (HTTP {status}): {exc}"
    return None

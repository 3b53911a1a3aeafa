"""Built-in `langgraph` adapter: a LangChain/LangGraph tool-calling agent, streamed token by token.

LangChain, LangGraph and llama.cpp are imported inside `setup()`, never at module
import, so the runtime (and its `echo` default) starts without them installed.

Durable at the graph's grain (docs/langgraph-durability.md): each task turn is
a LangGraph thread checkpointed in the task store's database, so a retried
attempt resumes after the last completed node (a finished tool call never runs
again), and the interrupted model call continues the stored partial answer
where the model can (prefill), else restarts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from molecule_runtime.adapters.base import AdapterConfig, BaseAdapter, TaskInput
from molecule_runtime.adapters.langgraph.checkpoints import Checkpoints, turn_thread
from molecule_runtime.adapters.langgraph.content import ModelInputs, model_inputs
from molecule_runtime.adapters.langgraph.imports import load_target
from molecule_runtime.adapters.langgraph.messages import trim_history
from molecule_runtime.adapters.langgraph.model_events import genai_identity
from molecule_runtime.adapters.langgraph.models import choose_model
from molecule_runtime.adapters.langgraph.options import (
    LOCAL_MAX_TOKENS,
    LangGraphOptions,
    OptionsError,
)
from molecule_runtime.adapters.langgraph.resume import CONTINUATION_KEY, Continuation
from molecule_runtime.adapters.langgraph.turn import GraphTurn
from molecule_runtime.adapters.outputs import Done

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from molecule_runtime.adapters.langgraph.local_llm import LocalModelServer

log = logging.getLogger(__name__)


class LangGraphAdapter(BaseAdapter):
    """A LangGraph agent (`langchain.agents.create_agent`) with pluggable model, prompt and tools.

    Subclass and override `load_system_prompt`, `load_tools`, `load_model` or
    `build_agent` to customise it (see `adapters/langgraph/adapter.py`).

    `continues_partial`: a retried attempt continues the stored answer. True
    when the model continues an assistant message (the local llama.cpp model,
    or `model_prefill` in ADAPTER_OPTIONS) and the graph continues it (the
    default `build_agent`); otherwise `setup()` sets it False on the instance and
    a retry streams the whole answer again, replacing the stored one: the text
    of completed model calls from the checkpoint, the interrupted call anew.
    """

    continues_partial = True

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
        self._checkpoints: Checkpoints | None = None
        # Whether the graph continues a prefix (the default build_agent's middleware).
        self._continuation_installed = False

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
        """A compiled LangGraph graph whose state has a `messages` list.

        `setup()` gives a graph compiled without a checkpointer the adapter's
        (one thread per task turn). A graph of your own continues an interrupted
        answer only with `self.continuation_middleware()` among its middleware."""
        from langchain.agents import create_agent

        return create_agent(
            model,
            tools,
            system_prompt=system_prompt or None,
            name=self.name(),
            middleware=[self.continuation_middleware()],
        )

    def continuation_middleware(self) -> Any:
        """The `create_agent` middleware through which a retried model call
        continues the answer the interrupted one had streamed (prefill)."""
        from molecule_runtime.adapters.langgraph.continuation import ContinueAnswer

        self._continuation_installed = True
        return ContinueAnswer()

    def model_continues_messages(self, model: BaseChatModel) -> bool:
        """Whether `model` continues a conversation that ends with an assistant
        message: the `model_prefill` option, else True for the local llama.cpp
        model only (OpenAI's API answers such a request anew)."""
        if self.options.model_prefill is not None:
            return self.options.model_prefill
        return self._local_server is not None

    # -- adapter contract ----------------------------------------------------

    async def setup(self, config: AdapterConfig) -> None:
        self.options = LangGraphOptions.from_config(config)
        system_prompt = self.load_system_prompt(config)
        tools = self.load_tools(config)
        model = await self.load_model(config)
        self._inputs = self.model_inputs(model)
        try:
            self._agent = self.build_agent(model, tools, system_prompt)
            self._checkpoints = await self.open_checkpoints(config)
            if getattr(self._agent, "checkpointer", False) is None:
                self._agent.checkpointer = self._checkpoints.saver
        except BaseException:
            await self.aclose()
            raise
        continues = self._continuation_installed and self.model_continues_messages(model)
        if not continues:
            # Per instance: the runtime reads it when an attempt starts.
            self.continues_partial = False  # type: ignore[misc]
        log.info(
            "langgraph agent ready: model=%s tools=%s checkpoints=%s retries %s the answer",
            self._model_description or type(model).__name__,
            [getattr(t, "name", getattr(t, "__name__", repr(t))) for t in tools],
            self._checkpoints.kind,
            "continue" if continues else "restart",
        )

    async def open_checkpoints(self, config: AdapterConfig) -> Checkpoints:
        """The graph's checkpoints, in the task store's database: the runtime's
        (`config.task_store_url`); set up outside the runtime, the one the
        environment names (TASK_STORE_URL, else the data dir's SQLite file)."""
        from molecule_runtime.config import Settings

        settings = Settings(data_dir=config.data_dir)
        url = config.task_store_url or settings.resolved_task_store_url
        return await Checkpoints.open(url, retention=settings.event_retention)

    async def aclose(self) -> None:
        checkpoints, self._checkpoints = self._checkpoints, None
        if checkpoints is not None:
            await checkpoints.aclose()
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
        thread_id, in_task = turn_thread()
        continuation = Continuation()
        run_config = {
            "recursion_limit": self.options.recursion_limit,
            "run_name": self.name(),
            "metadata": {
                "task_id": task.task_id,
                "context_id": task.context_id,
                "attempt": task.attempt,
            },
            "configurable": {"thread_id": thread_id, CONTINUATION_KEY: continuation},
        }
        if self._history_char_budget is not None:
            task = trim_history(task, self._history_char_budget)
        checkpoints = self._checkpoints if self._has_checkpointer() else None
        turn = GraphTurn(
            self._agent,
            self._inputs,
            self.continues_partial,
            self._genai,
            self.cut_message,
            checkpointed=checkpoints is not None,
        )
        try:
            if checkpoints is not None:
                checkpoints.started(thread_id)
            # Closed here, at once, when this generator is: on cancellation the
            # graph run stops now, not when the inner generator is collected.
            async with contextlib.aclosing(turn.run(task, run_config, continuation)) as items:
                async for item in items:
                    yield item
        finally:
            if checkpoints is not None and not in_task:
                # Nothing resumes a run outside a task: keep no thread of it.
                with contextlib.suppress(Exception):
                    await checkpoints.delete([thread_id])

    def _has_checkpointer(self) -> bool:
        return self._checkpoints is not None and bool(getattr(self._agent, "checkpointer", None))

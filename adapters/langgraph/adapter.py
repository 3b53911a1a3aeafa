"""LangGraph agent template: the built-in `langgraph` adapter with your prompt and tools.

Run it:  ADAPTER_MODULE=adapter molecule-runtime   (from the folder holding adapter.py)

With `MODEL` unset it answers with the bundled local SmolLM2 model; set
`MODEL=openai:gpt-4o-mini` (plus `OPENAI_API_KEY`) or any `provider:model` for a
hosted one. Every `ADAPTER_OPTIONS` key of the built-in adapter still works.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import tool

from molecule_runtime.adapters import AdapterConfig
from molecule_runtime.adapters.langgraph import LangGraphAdapter

# Used when neither SYSTEM_PROMPT nor the `system_prompt_file` option is set.
SYSTEM_PROMPT = "You are a concise, friendly assistant. Use a tool when it helps."


@tool
def count_words(text: str) -> int:
    """Count the words in a piece of text."""
    return len(text.split())


class Adapter(LangGraphAdapter):
    @staticmethod
    def name() -> str:
        return "langgraph-template"

    def load_system_prompt(self, config: AdapterConfig) -> str:
        return super().load_system_prompt(config) or SYSTEM_PROMPT

    def load_tools(self, config: AdapterConfig) -> list[Any]:
        # Your tools, plus any named by the `tools_module` option.
        return [count_words, *super().load_tools(config)]

    # To fix the model in code instead of using MODEL, override load_model:
    #
    # async def load_model(self, config: AdapterConfig) -> BaseChatModel:
    #     from langchain_openai import ChatOpenAI
    #     return ChatOpenAI(model="gpt-4o-mini", streaming=True)
    #
    # To use your own graph (any compiled LangGraph graph with a `messages`
    # state key), override build_agent(model, tools, system_prompt).

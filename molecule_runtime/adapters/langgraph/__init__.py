"""Built-in `langgraph` adapter (`RUNTIME=langgraph`).

Importing this package is cheap: LangChain, LangGraph and xllamacpp load in `setup()`.
"""

from molecule_runtime.adapters.langgraph.adapter import LangGraphAdapter
from molecule_runtime.adapters.langgraph.local_llm import local_model_available
from molecule_runtime.adapters.langgraph.messages import to_messages
from molecule_runtime.adapters.langgraph.options import LangGraphOptions

__all__ = ["LangGraphAdapter", "LangGraphOptions", "local_model_available", "to_messages"]

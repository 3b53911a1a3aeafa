"""An example template adapter: streams the message back word by word, in capitals.

A template repository holds a file like this one; the runtime image does the rest
(A2A server, task store, Temporal, telemetry). `ADAPTER_OPTIONS='{"prefix": "> "}'`
shows how adapter-specific settings arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from molecule_runtime.adapters import AdapterConfig, BaseAdapter, TaskInput


class Adapter(BaseAdapter):
    def __init__(self) -> None:
        self.prefix = ""

    @staticmethod
    def name() -> str:
        return "shout"

    async def setup(self, config: AdapterConfig) -> None:
        self.prefix = str(config.options.get("prefix", ""))

    async def stream(self, task: TaskInput) -> AsyncIterator[str]:
        if self.prefix:
            yield self.prefix
        for i, word in enumerate(task.text.split()):
            # A real agent awaits its model here; the sleep stands in for it and
            # is where cancellation (CancelledError) reaches the adapter.
            await asyncio.sleep(0)
            yield ("" if i == 0 else " ") + word.upper()

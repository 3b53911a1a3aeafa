"""Built-in `echo` adapter: streams the input back in a few chunks; zero dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from molecule_runtime.adapters.base import AdapterConfig, BaseAdapter, TaskInput


class EchoAdapter(BaseAdapter):
    """Echoes the user's text word by word.

    `ADAPTER_OPTIONS={"delay": 0.05}` adds a pause between chunks, which makes
    streaming and cancellation visible in demos.
    """

    def __init__(self) -> None:
        self._delay = 0.0

    @staticmethod
    def name() -> str:
        return "echo"

    def description(self) -> str:
        return "Echoes your message back, streamed word by word."

    async def setup(self, config: AdapterConfig) -> None:
        self._delay = float(config.options.get("delay", 0.0))

    async def stream(self, task: TaskInput) -> AsyncIterator[str]:
        words = task.text.split(" ")
        for i, word in enumerate(words):
            if self._delay:
                await asyncio.sleep(self._delay)
            yield word if i == 0 else " " + word


Adapter = EchoAdapter

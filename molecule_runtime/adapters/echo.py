"""Echo: the smallest complete adapter, and the built-in `RUNTIME=echo`.

As a template (adapters/echo/adapter.py is this file): copy it as `adapter.py`
and make it yours. Run it:  ADAPTER_MODULE=adapter molecule-runtime   (from the
folder holding adapter.py)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from molecule_runtime.adapters import AdapterConfig, BaseAdapter, TaskInput


class Adapter(BaseAdapter):
    """Streams the user's text back word by word.

    Options (`ADAPTER_OPTIONS`, a JSON object): `delay` seconds between words,
    `prefix` text put before the answer.
    """

    def __init__(self) -> None:
        self.delay = 0.0
        self.prefix = ""

    @staticmethod
    def name() -> str:
        return "echo"

    def description(self) -> str:
        return "Echoes your message back, streamed word by word."

    async def setup(self, config: AdapterConfig) -> None:
        # Called once before the first task: read settings, open clients, load models.
        self.delay = float(config.options.get("delay", 0.0))
        self.prefix = str(config.options.get("prefix", ""))

    async def stream(self, task: TaskInput) -> AsyncIterator[str]:
        # Yield text as soon as you have it; the runtime streams each chunk to the
        # client. Cancellation arrives as CancelledError at an await or a yield.
        if self.prefix:
            yield self.prefix
        for i, word in enumerate(task.text.split(" ")):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield word if i == 0 else " " + word


EchoAdapter = Adapter  # the name the `echo` entry point uses

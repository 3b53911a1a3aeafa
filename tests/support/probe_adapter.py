"""A test adapter, copied into a temporary directory as `adapter.py` (the template-repo layout).

What it does depends on the message text:
- `fail:<reason>` streams one chunk, then raises `RuntimeError(<reason>)`;
- `slow` streams a chunk every 10 ms for up to 30 s and, when cancelled, writes
  `cancelled-<task id>` in the data dir holding `time.time()` at the moment the
  `CancelledError` arrived;
- `history` answers with the JSON of the history it was given;
- anything else is answered as `probe: <text>`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from molecule_runtime.adapters import AdapterConfig, BaseAdapter, TaskInput


class Adapter(BaseAdapter):
    def __init__(self) -> None:
        self.data_dir = Path(".")

    @staticmethod
    def name() -> str:
        return "probe"

    def description(self) -> str:
        return "Probe adapter of the molecule-runtime tests."

    async def setup(self, config: AdapterConfig) -> None:
        self.data_dir = config.data_dir
        (self.data_dir / "setup-options.json").write_text(json.dumps(config.options))

    async def stream(self, task: TaskInput) -> AsyncIterator[str]:
        text = task.text
        if text.startswith("fail:"):
            yield "partial "
            raise RuntimeError(text.removeprefix("fail:").strip())
        if text == "history":
            yield json.dumps(task.history)
            return
        if text == "slow":
            (self.data_dir / f"started-{task.task_id}").write_text(str(time.time()))
            try:
                for i in range(3000):
                    await asyncio.sleep(0.01)
                    yield f"{i} "
            except asyncio.CancelledError:
                (self.data_dir / f"cancelled-{task.task_id}").write_text(repr(time.time()))
                raise
            return
        yield "probe: "
        yield text

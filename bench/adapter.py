"""The benchmark's trivial adapter (ADAPTER_MODULE=bench.adapter), driven by message metadata.

- `chunks` (int, default 8): how many text chunks to stream, with no delay unless
- `delay` (seconds) is set: a sleep before every chunk;
- `hold` (seconds): after the first chunk, wait until the process gets SIGUSR1
  (or `hold` seconds pass), then stream the rest. This keeps many tasks in
  flight at once for the RSS measurement without a timer per task;
- cancellation is recorded: `cancelled-<task id>` in the data dir holds
  `time.time()` at the moment `CancelledError` reached the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from molecule_runtime.adapters import AdapterConfig, BaseAdapter, TaskInput


class Adapter(BaseAdapter):
    def __init__(self) -> None:
        self.data_dir = Path(".")
        self._release = asyncio.Event()

    @staticmethod
    def name() -> str:
        return "bench"

    def description(self) -> str:
        return "Trivial streaming adapter of the molecule-runtime benchmarks."

    async def setup(self, config: AdapterConfig) -> None:
        self.data_dir = config.data_dir
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._release_all)

    def _release_all(self) -> None:
        # Wake every held task, then re-arm for the next batch.
        self._release.set()
        self._release = asyncio.Event()

    async def stream(self, task: TaskInput) -> AsyncIterator[str]:
        meta = task.metadata
        chunks = int(meta.get("chunks", 8))
        delay = float(meta.get("delay", 0))
        hold = float(meta.get("hold", 0))
        try:
            for i in range(chunks):
                if delay:
                    await asyncio.sleep(delay)
                yield f"c{i} "
                if i == 0 and hold:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._release.wait(), hold)
        except asyncio.CancelledError:
            (self.data_dir / f"cancelled-{task.task_id}").write_text(repr(time.time()))
            raise

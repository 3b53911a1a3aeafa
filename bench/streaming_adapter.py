"""The streaming benchmark's adapter (ADAPTER_MODULE=bench.streaming_adapter).

Driven by message metadata: `chunks` (default 500) chunks, `delay` seconds apart
(default 0.02). Every chunk is a fixed-width token

    c00042@1733040000.123456;

(sequence number, then `time.time()` when it was yielded, 6 decimals), so one
text serves two checks: the client measures each chunk's delay (yielded →
received) from the embedded time, and checks the answer is exact by its
sequence numbers (0..chunks-1, in order, no gap, no duplicate) and its length.

Every call of `stream()` appends a line to `attempts.log` in the data dir, so
the driver counts re-runs (an attempt the runtime started more than once).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from molecule_runtime.adapters import AdapterConfig, BaseAdapter, TaskInput

ATTEMPTS_LOG = "attempts.log"
# Width of one chunk token: "c" + 5 digits + "@" + 17 (10.6 seconds) + ";".
TOKEN_WIDTH = 25


def token(seq: int, at: float) -> str:
    return f"c{seq:05d}@{at:17.6f};"


def check_text(text: str, chunks: int) -> str | None:
    """None if `text` is exactly the `chunks` tokens in order, else what is wrong."""
    if len(text) != chunks * TOKEN_WIDTH:
        return f"length {len(text)} != {chunks * TOKEN_WIDTH}"
    for seq in range(chunks):
        tok = text[seq * TOKEN_WIDTH : (seq + 1) * TOKEN_WIDTH]
        if tok[0] != "c" or tok[6] != "@" or tok[-1] != ";" or int(tok[1:6]) != seq:
            return f"token {seq} is {tok!r}"
    return None


class Adapter(BaseAdapter):
    def __init__(self) -> None:
        self.data_dir = Path(".")

    @staticmethod
    def name() -> str:
        return "bench-streaming"

    def description(self) -> str:
        return "Paced streaming adapter of the molecule-runtime streaming benchmark."

    async def setup(self, config: AdapterConfig) -> None:
        self.data_dir = config.data_dir

    def _record_attempt(self, task: TaskInput) -> None:
        # One short O_APPEND write per attempt: atomic for lines this small, so
        # 500 concurrent attempts cannot interleave their lines.
        line = f"{task.task_id} {task.attempt} {time.time():.6f}\n".encode()
        fd = os.open(self.data_dir / ATTEMPTS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    async def stream(self, task: TaskInput) -> AsyncIterator[str]:
        self._record_attempt(task)
        meta = task.metadata
        chunks = int(meta.get("chunks", 500))
        delay = float(meta.get("delay", 0.02))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq in range(chunks):
            if delay:
                # An absolute schedule (like a model API producing tokens at its
                # own pace): a late wake-up does not push every later chunk back,
                # so the answer takes chunks x delay unless the loop is starved.
                await asyncio.sleep(max(0.0, start + (seq + 1) * delay - loop.time()))
            yield token(seq, time.time())

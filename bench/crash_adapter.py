"""The crash-repeat benchmark's adapter (ADAPTER_MODULE=bench.crash_adapter).

Two kinds, chosen by `ADAPTER_OPTIONS`:

- `{"continues": false}` (plain, today's adapter): each attempt generates the
  whole answer from chunk 0, and its side effects are plain calls;
- `{"continues": true}`: `continues_partial = True` and every side effect is a
  `step(...)`: a retry yields only the chunks after `TaskInput.partial`, and
  calls the steps before it again (replayed from the journal, not run), so the
  journal's order holds.

Message metadata: `chunks` (default 500), `delay` (seconds before each chunk,
default 0.02), `effect_every` (a side effect before every that many chunks,
default 50), `record` (a file: one JSON line per attempt, per chunk generated
with its `time.time()`, and per side effect run). The answer is the fixed-width
chunks "c0000 ", "c0001 ", ...
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator

from molecule_runtime.adapters import AdapterConfig, BaseAdapter, NonRetryableError, TaskInput, step

WIDTH = 6


def chunk(i: int) -> str:
    return f"c{i:04d} "


def answer(chunks: int) -> str:
    return "".join(chunk(i) for i in range(chunks))


class Adapter(BaseAdapter):
    continues_partial = False

    @staticmethod
    def name() -> str:
        return "bench-crash"

    def description(self) -> str:
        return "Paced adapter with side effects of the crash-repeat benchmark."

    async def setup(self, config: AdapterConfig) -> None:
        self.continues_partial = bool(config.options.get("continues"))

    async def stream(self, task: TaskInput) -> AsyncIterator[str]:
        meta = task.metadata
        chunks = int(meta.get("chunks", 500))
        delay = float(meta.get("delay", 0.02))
        every = int(meta.get("effect_every", 50))
        record = str(meta.get("record", ""))
        partial = task.partial if self.continues_partial else ""
        if not answer(chunks).startswith(partial) or len(partial) % WIDTH:
            raise NonRetryableError("partial is not a prefix of whole chunks")
        first = len(partial) // WIDTH

        def note(line: dict[str, object]) -> None:
            if record:
                with open(record, "a") as f:
                    f.write(json.dumps(line) + "\n")

        def effect(i: int) -> int:
            note({"attempt": task.attempt, "effect": i})
            return i

        note({"attempt": task.attempt, "pid": os.getpid(), "first": first})
        for i in range(chunks):
            if i % every == 0:
                if self.continues_partial:
                    await step("effect", effect, i)
                else:
                    effect(i)
            if i < first:
                continue  # stored and streamed by an earlier attempt
            await asyncio.sleep(delay)
            note({"attempt": task.attempt, "chunk": i, "at": time.time()})
            yield chunk(i)

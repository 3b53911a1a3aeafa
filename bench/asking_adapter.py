"""The waiting-memory benchmark's adapter (ADAPTER_MODULE=bench.asking_adapter).

A message `ask` asks a question at once, so its task waits in `input-required`;
any other text (an answer) is streamed back and ends the task. The same first
turn as the `ask` path of tests/fixtures/gate_adapter.py, which
tests/test_waiting_memory.py uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from molecule_runtime.adapters import BaseAdapter, InputRequired, TaskInput


class Adapter(BaseAdapter):
    @staticmethod
    def name() -> str:
        return "asking"

    async def stream(self, task: TaskInput) -> AsyncIterator[str | InputRequired]:
        if task.text.strip() == "ask":
            yield InputRequired("Which name?")
            return
        yield task.text

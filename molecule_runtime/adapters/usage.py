"""Optional: adapters report what a model call used (tokens, model, cost).

```python
from molecule_runtime.adapters import report_usage

report_usage(input_tokens=120, output_tokens=48, model="gpt-4o-mini", cost=0.0004)
```

Call it from `stream()` (or code it calls) once per model call, or once per
attempt with the sums: reports of one attempt add up. The runtime stores them
on the task (`GetTask` metadata `molecule.usage`: per attempt and in total),
counts them in Prometheus and sets them on the `llm_call` span. Outside a
running attempt (e.g. an adapter driven by a unit test) it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class UsageReport:
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    cost: float | None = None  # in whatever currency the adapter prices in


# Set by the runtime for the duration of one attempt; a context variable, so
# concurrent tasks in one process never see each other's recorder.
current_recorder: ContextVar[Callable[[UsageReport], None] | None] = ContextVar(
    "molecule_usage_recorder", default=None
)


def report_usage(
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    model: str = "",
    cost: float | None = None,
) -> None:
    """Record usage for the attempt that is running now (a no-op outside one)."""
    if input_tokens < 0 or output_tokens < 0 or (cost is not None and cost < 0):
        raise ValueError("usage must not be negative")
    recorder = current_recorder.get()
    if recorder is not None:
        recorder(UsageReport(int(input_tokens), int(output_tokens), str(model), cost))

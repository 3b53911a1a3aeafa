"""Durable steps: side effects that run once per task turn, whatever the retries.

```python
from molecule_runtime.adapters import step

async def stream(self, task):
    order = await step("place-order", shop.place_order, task.text)   # runs once
    yield f"Order {order['id']} placed."
```

`await step(name, fn, *args, **kwargs)` calls `fn(*args, **kwargs)` (sync or
async) and stores its result (any JSON value) in the task store before it
returns. A later attempt of the same turn — a retry after an error, a crash,
a deploy, another replica — gets the stored result back without calling `fn`.
Steps are told apart by name and by their order within the attempt: a loop
that calls `step("search", ...)` three times records three steps, and a later
attempt must ask for them in the same order (else `StepMismatch`).

The value returned is the stored JSON read back, on the first attempt too (a
tuple comes back as a list), so every attempt sees the same value. An
exception from `fn` is not recorded: the step runs again on the next attempt.
Outside a running task (an adapter driven by a unit test) `step` just calls `fn`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol

from molecule_runtime.adapters.base import NonRetryableError


class StepMismatch(NonRetryableError):
    """An attempt asked for its steps in another order than an earlier attempt
    recorded them: replaying would hand it a wrong value, so the task fails."""


class StepResultError(NonRetryableError):
    """A step's result cannot be stored: not a JSON value, or too large."""


class StepJournal(Protocol):
    async def run(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any: ...


# Set by the runtime for the duration of one attempt (a context variable:
# concurrent tasks in one process never see each other's journal).
current_journal: ContextVar[StepJournal | None] = ContextVar("molecule_step_journal", default=None)


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def step(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run `fn(*args, **kwargs)` once per task turn; its JSON result is journaled."""
    if not isinstance(name, str) or not name:
        raise ValueError("a step needs a non-empty name")
    journal = current_journal.get()
    if journal is None:
        return await _call(fn, args, kwargs)
    return await journal.run(name, lambda: _call(fn, args, kwargs))

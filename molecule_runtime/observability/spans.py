"""OpenTelemetry spans for the three task stages (`task_receive`, `llm_call`, `task_complete`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from molecule_runtime.adapters.base import TaskInput

_tracer = trace.get_tracer("molecule_runtime")


@contextmanager
def stage_span(name: str, task: TaskInput, attributes: dict[str, Any]) -> Iterator[trace.Span]:
    """A span for one stage of a task; errors are recorded with status ERROR."""
    attrs = {
        "a2a.task.id": task.task_id,
        "a2a.context.id": task.context_id,
        "molecule.attempt": task.attempt,
        **{f"molecule.{k}": v for k, v in attributes.items()},
    }
    with _tracer.start_as_current_span(
        name, attributes=attrs, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def inject_trace_context() -> dict[str, str]:
    """The current W3C trace context as a dict, to carry across Temporal."""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier

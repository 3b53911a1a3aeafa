"""The metrics of one run of a task: in flight, duration, time to the first
chunk and how it ended, labelled with the mode it ran in."""

from __future__ import annotations

import time

from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.observability import metrics
from molecule_runtime.states import outcome_of
from molecule_runtime.vocabulary import Mode, Outcome


class RunMetrics:
    def __init__(self, mode: Mode) -> None:
        self.mode = mode  # as routed: in flight, duration, first chunk
        self.mode_used = mode  # as it ran (a fallback runs directly): the outcome
        self._started = time.monotonic()  # a wait for a slot counts
        self._in_flight = False

    def running(self) -> None:
        """It holds its slot and runs now."""
        metrics.IN_FLIGHT.labels(self.mode).inc()
        self._in_flight = True

    def ended(self, events: TaskEvents) -> None:
        """The run is over (whichever way: also cancelled or failed)."""
        if self._in_flight:
            metrics.IN_FLIGHT.labels(self.mode).dec()
        metrics.TASK_DURATION.labels(self.mode).observe(time.monotonic() - self._started)
        if events.first_chunk_at is not None:
            metrics.FIRST_CHUNK.labels(self.mode).observe(events.first_chunk_at - self._started)
        ended = events.terminal_state
        state = (outcome_of(ended) if ended is not None else None) or (
            Outcome.INPUT_REQUIRED if events.input_required.is_set() else Outcome.CANCELED
        )
        metrics.TASKS.labels(state, self.mode_used).inc()

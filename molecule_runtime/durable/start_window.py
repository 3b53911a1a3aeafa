"""How many new tasks' workflows may be on their way to their first attempt at once.

A start is on its way from the start call until its `llm_call` attempt begins
here: the workflow's first task and the attempt's dispatch both pass through
this process's event loop, one per turn of the loop in the SDK's pollers. A
burst let through all at once puts hundreds of them behind hundreds of
streams, and an attempt Temporal counts as started can reach the loop only
after its heartbeat timeout has run out: the attempt is retried because this
process was busy. Too few at once, and a burst is spread over a longer,
busier stretch (500 streams on 2 cores: 32 at once took 1.5x the wall time and
CPU of 512).

So the window adapts, as TCP's congestion window does: every start that got
through within `target` seconds widens it by one; one that took longer halves
it (at most once per `target`, as one slow stretch slows many starts at once),
between `low` and `high`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

LOW = 32
HIGH = 512
# The target is this share of the tightest timeout a start's backlog runs into:
# the first workflow task's, or the attempt's heartbeat timeout, counted by
# Temporal from when the SDK took the attempt, before it reached the loop.
TARGET_SHARE = 0.5


class StartWindow:
    def __init__(self, target: float, low: int = LOW, high: int = HIGH) -> None:
        self.target = target
        self.low = low
        self.high = high
        self.limit = float(low)
        self.in_flight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._last_cut = float("-inf")

    @classmethod
    def for_timeouts(cls, heartbeat_timeout: float, workflow_task_timeout: float) -> StartWindow:
        return cls(TARGET_SHARE * min(heartbeat_timeout, workflow_task_timeout))

    def full(self) -> bool:
        return self.in_flight >= int(self.limit) or bool(self._waiting)

    async def enter(self) -> None:
        """A place in the window, first come first served."""
        if not self.full():
            self.in_flight += 1
            return
        place = asyncio.get_running_loop().create_future()
        self._waiting.append(place)
        try:
            await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self.leave(None)  # granted as it was cancelled: give it on
            elif place in self._waiting:  # (a leave() may have passed it over already)
                self._waiting.remove(place)
            raise

    def leave(self, took: float | None) -> None:
        """A start left the window after `took` seconds (None: it says nothing of
        the load, e.g. canceled)."""
        self.in_flight -= 1
        if took is not None:
            if took <= self.target:
                self.limit = min(self.high, self.limit + 1)
            else:
                now = time.monotonic()
                if now - self._last_cut >= self.target:
                    self._last_cut = now
                    self.limit = max(self.low, self.limit / 2)
        while self._waiting and self.in_flight < int(self.limit):
            place = self._waiting.popleft()
            if not place.done():
                self.in_flight += 1
                place.set_result(None)

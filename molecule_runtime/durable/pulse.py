"""Heartbeats that a busy event loop cannot delay.

A running activity heartbeats from the event loop (durable/llm_call.py). Under a
burst the loop falls seconds behind, and a heartbeat timeout would then retry an
attempt that is alive and working: the retry runs beside it and both write the
task. So a thread beats for every running activity whose own heartbeat is late,
for as long as the event loop still turns (a callback ticks every half second).
A loop that has not turned for `stall_limit` is a hung process: the thread stops
beating for it and its attempts time out as a crashed process's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from molecule_runtime.observability import metrics
from molecule_runtime.sdk_seam import heartbeat_sender

log = logging.getLogger(__name__)

Send = Callable[[bytes], None]

TICK = 0.5
# A loop that does not turn for this many heartbeat timeouts is taken for hung.
STALL_TIMEOUTS = 4


@dataclass
class _Beating:
    send: Send
    last: float  # monotonic time of the last heartbeat sent for it


class Pulse:
    """Keeps the heartbeats of this process's running activities on time."""

    def __init__(self, *, interval: float, heartbeat_timeout: float) -> None:
        self.interval = interval
        self.stall_limit = STALL_TIMEOUTS * heartbeat_timeout
        self._senders: dict[str, Send] = {}
        self._running: dict[bytes, _Beating] = {}
        self._lock = threading.Lock()
        self._tick = time.monotonic()
        self._ticker: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats_sent = 0  # by the thread, for tests and logs

    def serve(self, task_queue: str, worker: Any) -> None:
        """Beats for activities of `task_queue` go to this worker's core."""
        self._senders[task_queue] = heartbeat_sender(worker)

    def start(self) -> None:
        """From the event loop the activities run on."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._tick = time.monotonic()
        self._ticker = asyncio.get_running_loop().call_later(TICK, self._turned)
        self._thread = threading.Thread(target=self._beat, name="molecule-pulse", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * TICK)
            self._thread = None

    def _turned(self) -> None:
        self._tick = time.monotonic()
        self._ticker = asyncio.get_running_loop().call_later(TICK, self._turned)

    @contextlib.contextmanager
    def running(self, token: bytes, task_queue: str) -> Iterator[None]:
        send = self._senders.get(task_queue)
        if send is None:
            yield
            return
        with self._lock:
            self._running[token] = _Beating(send, time.monotonic())
        try:
            yield
        finally:
            # Under the lock: no beat for it once the activity is done.
            with self._lock:
                self._running.pop(token, None)

    def beat(self, token: bytes) -> None:
        """The activity heartbeated itself (on the loop)."""
        beating = self._running.get(token)
        if beating is not None:
            beating.last = time.monotonic()

    def _beat(self) -> None:
        while not self._stop.wait(TICK):
            now = time.monotonic()
            if now - self._tick > self.stall_limit:
                continue
            with self._lock:
                for token, beating in self._running.items():
                    if now - beating.last < self.interval:
                        continue
                    beating.last = now
                    try:
                        beating.send(token)
                        self.beats_sent += 1
                    except Exception:  # the worker is shutting down: nothing to keep alive
                        log.debug("heartbeat from the pulse thread failed", exc_info=True)


class PulseInterceptor(Interceptor):
    """Registers every running (non-local) activity with the pulse."""

    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.pulse)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, pulse: Pulse) -> None:
        super().__init__(next)
        self.pulse = pulse

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_Outbound(outbound, self.pulse))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.is_local:
            return await super().execute_activity(input)
        with self.pulse.running(info.task_token, info.task_queue):
            return await super().execute_activity(input)


class _Outbound(ActivityOutboundInterceptor):
    def __init__(self, next: ActivityOutboundInterceptor, pulse: Pulse) -> None:
        super().__init__(next)
        self.pulse = pulse

    def heartbeat(self, *details: Any) -> None:
        self.pulse.beat(activity.info().task_token)
        super().heartbeat(*details)


def note_dispatch(info: activity.Info) -> float:
    """How long a started attempt waited before its code ran here (the SDK hands
    the event loop one task per poll, so a busy loop holds the rest back), counted
    against its heartbeat timeout, which Temporal runs from the start: no thread
    can beat for an attempt that has not reached the process. Warns at half."""
    waited = max(0.0, time.time() - info.started_time.timestamp())
    metrics.DISPATCH_DELAY.observe(waited)
    timeout = info.heartbeat_timeout.total_seconds() if info.heartbeat_timeout else None
    if timeout is not None and waited > timeout / 2:
        log.warning(
            "task workflow %s: llm_call attempt %d reached this process %.1f s after Temporal "
            "started it (heartbeat timeout %.0f s): the event loop is too busy to take new "
            "attempts in time; give the process more CPU or fewer tasks (MOLECULE_MAX_RUNNING_TASKS)",
            info.workflow_id,
            info.attempt,
            waited,
            timeout,
        )
    return waited

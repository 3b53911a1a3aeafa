"""Merges chunks into artifact events, as few as the load requires.

A model streaming 100 tokens a second would otherwise cost 100 events (and
store writes) a second per task. The first chunk goes out at once; after that
at most one event per window carries whatever arrived meanwhile, and a new
event waits until the store has taken the previous one. So when the process
is busy (CPU, store), events get fewer and larger instead of queueing up: the
window also widens with the event loop's lag (observability/watchdog.py), and
the stream slows down, it never fails. A window of 0 sends every chunk on its own
as long as the store keeps up.

Events are sent by a background sender, so the adapter keeps streaming while
an event is being stored; only when more than `MAX_BUFFERED_CHARS` wait does
the adapter wait too.
"""

from __future__ import annotations

import asyncio
import contextlib

from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.observability.watchdog import LoopLoad

MAX_BUFFERED_CHARS = 1 << 20
MAX_EXTRA_WINDOW = 1.0
# The window widens by this many times the loop's lag: each event costs the loop
# far more than a chunk, so a busy loop must get fewer of them, whatever the store's
# speed (100 streams on 2 cores: ~40 events per stream instead of ~85, wall 1.21-1.24x
# instead of 1.38-1.46x). Lag up to LAG_IDLE is an idle loop's noise: a lone stream
# (or STREAM_BATCH_WINDOW=0) is not merged because of it.
LAG_WIDENING = 16
LAG_IDLE = 0.002


class ChunkBatcher:
    def __init__(self, events: TaskEvents, window: float) -> None:
        self.events = events
        self.window = window
        self.sent_any = False
        self._buffer: list[str] = []
        self._buffered = 0
        self._last_sent = float("-inf")
        self._sender: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._error: BaseException | None = None
        self._sending = False

    async def add(self, text: str) -> None:
        self._raise_pending()
        idle = self._sender is None or self._sender.done()
        loop = asyncio.get_running_loop()
        if idle and not self._buffer and loop.time() - self._last_sent >= self.window:
            # Nothing waiting: this chunk goes out at once.
            await self._send(text)
            self._drained.clear()
            self._sender = asyncio.create_task(self._send_buffered())
            return
        self._buffer.append(text)
        self._buffered += len(text)
        self._drained.clear()
        if idle:
            self._sender = asyncio.create_task(self._send_buffered())
        if self._buffered > MAX_BUFFERED_CHARS:
            await self._drained.wait()
            self._raise_pending()

    async def _send_buffered(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                # The next event waits until the store has taken the last one.
                await self.events.settled()
                # A busy loop (many streams, little CPU left) widens the window.
                busy = min(LAG_WIDENING * max(0.0, LoopLoad.lag - LAG_IDLE), MAX_EXTRA_WINDOW)
                delay = self._last_sent + self.window + busy - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self._buffer:
                    return  # nothing came, or close() took the tail
                self._sending = True
                try:
                    await self._send(self._take())
                finally:
                    self._sending = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced by the next add() or close()
            self._error = exc
        finally:
            self._drained.set()

    def _take(self) -> str:
        text = "".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return text

    async def _send(self, text: str, *, last: bool = False) -> None:
        await self.events.chunk(text, append=self.sent_any, last=last)
        self.sent_any = True
        self._last_sent = asyncio.get_running_loop().time()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def close(self, *, flush: bool) -> bool:
        """When `flush` (the stream ended normally), send what is buffered as the
        artifact's last chunk and return True if that last chunk was sent;
        otherwise drop what is buffered and stop the sender."""
        sender, self._sender = self._sender, None
        if not flush:
            self._buffer.clear()
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            return False
        if sender is not None:
            # The tail goes out as the last chunk, without waiting for the window.
            tail = self._take() if self._buffer else None
            if not self._sending:
                sender.cancel()  # waiting for the window or the store: no need now
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._raise_pending()
            if tail is not None:
                await self._send(tail, last=True)
                return True
            return False
        self._raise_pending()
        if not self._buffer:
            return False
        await self._send(self._take(), last=True)
        return True

"""Merges chunks that arrive in quick succession into one artifact event.

Every artifact event is a task-store write before it reaches the client, so a
model streaming 100 tokens a second would cost 100 writes a second per task.
The first chunk goes out at once; after that at most one event per window
carries whatever arrived meanwhile. A window of 0 sends every chunk on its own.
"""

from __future__ import annotations

import asyncio
import contextlib

from molecule_runtime.execution.events import TaskEvents


class ChunkBatcher:
    def __init__(self, events: TaskEvents, window: float) -> None:
        self.events = events
        self.window = window
        self.sent_any = False
        self._buffer: list[str] = []
        self._last_sent = float("-inf")
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._error: BaseException | None = None

    async def add(self, text: str) -> None:
        self._raise_pending()
        now = asyncio.get_running_loop().time()
        if not self._buffer and now - self._last_sent >= self.window:
            async with self._lock:
                await self._send(text)
            return
        self._buffer.append(text)
        if self._timer is None:
            delay = max(0.0, self._last_sent + self.window - now)
            self._timer = asyncio.create_task(self._flush_later(delay))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None
        try:
            await self.flush()
        except Exception as exc:  # surfaced by the next add() or close()
            self._error = exc

    async def flush(self, *, last: bool = False) -> bool:
        """Send what is buffered; True if something was sent."""
        async with self._lock:
            if not self._buffer:
                return False
            text = "".join(self._buffer)
            self._buffer.clear()
            await self._send(text, last=last)
            return True

    async def _send(self, text: str, *, last: bool = False) -> None:
        await self.events.chunk(text, append=self.sent_any, last=last)
        self.sent_any = True
        self._last_sent = asyncio.get_running_loop().time()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def close(self, *, flush: bool) -> bool:
        """Stop the timer; when `flush` (the stream ended normally) send what is
        buffered as the artifact's last chunk. True if that last chunk was sent."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        if flush:
            self._raise_pending()
            return await self.flush(last=True)
        self._buffer.clear()
        return False

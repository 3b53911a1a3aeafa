"""One asyncio lock per key, kept only while someone holds or waits for it.

A dict of locks that only grows would keep one lock per task or conversation
ever seen; counting the users of each lock lets the last one drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)


class KeyedLock(Generic[_K]):
    def __init__(self) -> None:
        self._locks: dict[_K, tuple[asyncio.Lock, int]] = {}  # lock, its users

    @contextlib.asynccontextmanager
    async def holding(self, key: _K) -> AsyncIterator[None]:
        """Hold the lock of `key` for the block (waiting for earlier holders)."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        """Keys whose lock is held or waited for now."""
        return len(self._locks)

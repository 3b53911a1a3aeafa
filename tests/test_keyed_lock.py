"""The keyed lock (keyed_lock.py): one holder per key at a time, nothing kept once released."""

from __future__ import annotations

import asyncio

from molecule_runtime.keyed_lock import KeyedLock


async def test_one_holder_per_key_and_no_lock_kept_after_release() -> None:
    locks: KeyedLock[str] = KeyedLock()
    order: list[str] = []
    first_in = asyncio.Event()
    go_on = asyncio.Event()

    async def hold(key: str, name: str, wait: bool = False) -> None:
        async with locks.holding(key):
            order.append(f"{name} in")
            if wait:
                first_in.set()
                await go_on.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(hold("a", "first", wait=True))
    await first_in.wait()
    second = asyncio.create_task(hold("a", "second"))
    other = asyncio.create_task(hold("b", "other"))
    await other  # another key does not wait
    await asyncio.sleep(0)
    assert order == ["first in", "other in", "other out"]
    assert len(locks) == 1
    go_on.set()
    await asyncio.gather(first, second)
    assert order[3:] == ["first out", "second in", "second out"]
    assert len(locks) == 0


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    locks: KeyedLock[str] = KeyedLock()
    async with locks.holding("a"):
        waiter = asyncio.create_task(locks.holding("a").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    assert len(locks) == 0

"""The start window: how many new tasks' workflows may be on their way to their
first attempt at once (durable/start_window.py)."""

from __future__ import annotations

import asyncio

import pytest

from molecule_runtime.durable.start_window import HIGH, LOW, TARGET_SHARE, StartWindow


async def test_it_starts_at_low_and_widens_by_one_per_start_within_the_target() -> None:
    window = StartWindow(target=1.0)
    assert window.limit == LOW
    for _ in range(LOW):
        await window.enter()
    assert window.full()
    window.leave(0.5)
    window.leave(0.5)
    assert window.limit == LOW + 2
    assert window.in_flight == LOW - 2
    for _ in range(4):
        await window.enter()
    assert window.full()


async def test_a_slow_start_halves_it_once_per_target_never_below_low() -> None:
    window = StartWindow(target=60.0, low=4, high=64)
    window.limit = 40.0
    for _ in range(3):
        await window.enter()
    window.leave(61.0)
    assert window.limit == 20.0
    # The same slow stretch slows the starts beside it: no second cut now.
    window.leave(61.0)
    assert window.limit == 20.0
    window._last_cut -= 61.0  # a target's time later
    window.leave(61.0)
    assert window.limit == 10.0
    window.limit = 5.0
    window._last_cut -= 61.0
    await window.enter()
    window.leave(61.0)
    assert window.limit == 4


async def test_it_never_widens_past_high_and_an_unknown_duration_changes_nothing() -> None:
    window = StartWindow(target=1.0, low=2, high=3)
    for _ in range(5):
        await window.enter()
        window.leave(0.1)
    assert window.limit == 3
    await window.enter()
    window.leave(None)
    assert window.limit == 3
    assert window.in_flight == 0


async def test_waiting_starts_are_let_in_first_come_first_served() -> None:
    window = StartWindow(target=1.0, low=1, high=1)
    await window.enter()
    order: list[int] = []

    async def wait(i: int) -> None:
        await window.enter()
        order.append(i)

    waiters = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    # A new start queues behind those already waiting, even once a place frees.
    assert window.full()
    for _ in range(3):
        window.leave(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert window.in_flight == 1


async def test_a_canceled_wait_takes_no_place() -> None:
    window = StartWindow(target=1.0, low=1, high=1)
    await window.enter()
    waiting = asyncio.create_task(window.enter())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    window.leave(None)
    assert window.in_flight == 0
    assert not window.full()


async def test_a_wait_canceled_and_passed_over_before_it_resumes_ends_canceled() -> None:
    window = StartWindow(target=1.0, low=1, high=1)
    await window.enter()
    waiting = asyncio.create_task(window.enter())
    later = asyncio.create_task(window.enter())
    await asyncio.sleep(0)
    waiting.cancel()  # its place in line is canceled at once...
    window.leave(None)  # ...and passed over, before the wait resumes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(later, 1)
    assert window.in_flight == 1
    assert not window._waiting


async def test_a_place_granted_as_its_wait_is_canceled_is_given_on() -> None:
    window = StartWindow(target=1.0, low=1, high=1)
    await window.enter()
    first = asyncio.create_task(window.enter())
    second = asyncio.create_task(window.enter())
    await asyncio.sleep(0)
    window.leave(None)  # grants `first` its place...
    first.cancel()  # ...which is canceled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    assert window.in_flight == 1


def test_the_target_is_half_the_tightest_timeout_a_backlog_runs_into() -> None:
    assert TARGET_SHARE == 0.5
    assert StartWindow.for_timeouts(30.0, 10.0).target == 5.0
    assert StartWindow.for_timeouts(5.0, 10.0).target == 2.5
    assert HIGH >= 500  # a 500-stream burst on one process fits when the loop keeps up

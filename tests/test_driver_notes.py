"""asyncpg's note about a cancelled query's connection is not logged as an ERROR;
any other unretrieved exception still is (asyncio's own handler, a real loop)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

import molecule_runtime.store.driver_notes  # noqa: F401 - installs the filter


async def _unretrieved(exc: BaseException) -> None:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    del future
    gc.collect()
    await asyncio.sleep(0)


async def test_the_cancelled_query_note_is_debug_and_other_errors_stay(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        await _unretrieved(ConnectionError("unexpected connection_lost() call"))
        await _unretrieved(ConnectionError("something else"))
    unretrieved = [r for r in caplog.records if r.getMessage().startswith("Future exception was never retrieved")]
    assert [r.levelname for r in unretrieved] == ["DEBUG", "ERROR"], [(r.levelname, r.getMessage()) for r in unretrieved]

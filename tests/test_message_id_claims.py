"""Message-id claims on a real SQLite file and a real PostgreSQL server: claims made
at once share transactions, and each id still has exactly one holder, also when two
processes (two `MessageIds` on one database) claim it at once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from molecule_runtime.store.claims_table import MessageClaim, now_utc
from molecule_runtime.store.message_ids import MessageIds


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    return request.getfixturevalue("postgres").database()


@pytest.fixture
async def engines(store_url: str) -> AsyncIterator[list[AsyncEngine]]:
    made = [create_async_engine(store_url), create_async_engine(store_url)]
    try:
        yield made
    finally:
        for engine in made:
            await engine.dispose()


def count_commits(engine: AsyncEngine) -> list[int]:
    commits = [0]

    @event.listens_for(engine.sync_engine, "commit")
    def _commit(_conn: object) -> None:
        commits[0] += 1

    return commits


def claim(owner: str, message_id: str) -> MessageClaim:
    return MessageClaim(
        owner=owner,
        message_id=message_id,
        task_id=str(uuid.uuid4()),
        context_id=str(uuid.uuid4()),
        digest="d",
        created_at=now_utc(),
    )


def check_one_holder(
    claims: list[MessageClaim], answers: list[MessageClaim | None]
) -> dict[tuple[str, str], str]:
    """Each (owner, id) was taken by exactly one claim; the others were told its task."""
    winners: dict[tuple[str, str], str] = {}
    for c, answer in zip(claims, answers, strict=True):
        if answer is None:
            key = (c.owner, c.message_id)
            assert key not in winners, f"{key} taken twice"
            winners[key] = c.task_id
    for c, answer in zip(claims, answers, strict=True):
        key = (c.owner, c.message_id)
        assert key in winners, f"nobody took {key}"
        if answer is not None:
            assert answer.task_id == winners[key] != c.task_id
            assert (answer.owner, answer.message_id) == key
    return winners


async def test_claims_made_at_once_share_transactions_and_each_id_has_one_holder(
    engines: list[AsyncEngine],
) -> None:
    ids = MessageIds(engines[0])
    await ids.initialize()
    commits = count_commits(engines[0])
    # 20 ids sent three times each, and the same ids by another sender.
    claims = [claim(owner, f"m{i}") for i in range(20) for owner in ("alice", "alice", "alice", "bob")]
    answers = await asyncio.gather(*(ids.claim(c) for c in claims))
    winners = check_one_holder(claims, answers)
    assert len(winners) == 40
    # One transaction for the first claim, one for all that came while it was written.
    assert commits[0] <= 3, commits[0]
    # What is stored is what the callers were told.
    async with engines[0].connect() as conn:
        rows = (await conn.execute(text("SELECT owner, message_id, task_id FROM molecule_message_ids"))).all()
    assert {(r.owner, r.message_id): r.task_id for r in rows} == winners
    # A repeat after the burst gets the holder; a new id is taken.
    again = claim("alice", "m3")
    assert (await ids.claim(again)).task_id == winners[("alice", "m3")]  # type: ignore[union-attr]
    assert await ids.claim(claim("alice", "new")) is None


async def test_two_processes_claiming_the_same_ids_at_once_give_each_one_holder(
    engines: list[AsyncEngine],
) -> None:
    first, second = MessageIds(engines[0]), MessageIds(engines[1])
    await first.initialize()
    claims = [claim("alice", f"m{i}") for i in range(30) for _ in range(2)]
    answers = await asyncio.gather(
        *((first if n % 2 else second).claim(c) for n, c in enumerate(claims))
    )
    assert len(check_one_holder(claims, answers)) == 30


async def test_a_failed_batch_fails_its_claims_and_later_claims_are_written(
    engines: list[AsyncEngine],
) -> None:
    ids = MessageIds(engines[0])  # table not created yet: the batch's insert fails
    claims = [claim("alice", f"m{i}") for i in range(5)]
    answers = await asyncio.gather(*(ids.claim(c) for c in claims), return_exceptions=True)
    assert all(isinstance(a, OperationalError | ProgrammingError) for a in answers), answers
    await ids.initialize()
    assert await asyncio.gather(*(ids.claim(c) for c in claims)) == [None] * 5


async def test_a_claim_whose_sender_is_cancelled_while_it_is_written_is_given_back(
    engines: list[AsyncEngine],
) -> None:
    ids = MessageIds(engines[0])
    await ids.initialize()
    kept, dropped = claim("alice", "kept"), claim("alice", "dropped")
    first = asyncio.create_task(ids.claim(kept))
    second = asyncio.create_task(ids.claim(dropped))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # both wait in the batch now being written
    second.cancel()
    assert await first is None
    with contextlib.suppress(asyncio.CancelledError):
        await second
    assert second.cancelled()
    # Nothing will be created for the dropped claim: another send takes the id at once.
    for _ in range(50):
        if await ids.get("alice", "dropped") is None:
            break
        await asyncio.sleep(0.02)
    assert await ids.claim(claim("alice", "dropped")) is None
    assert (await ids.get("alice", "kept")).task_id == kept.task_id  # type: ignore[union-attr]

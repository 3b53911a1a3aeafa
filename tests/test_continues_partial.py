"""An adapter that continues its answer (`continues_partial = True`): a retried
attempt gets what the store holds of the answer (`TaskInput.partial`) and yields
only the rest; the runtime appends it, so no client sees the answer taken back.

Real Temporal (the tests' dev server), real SQLite and PostgreSQL, real HTTP
(raw SSE, to read each update's `append` and each event's id). The adapter is
tests/fixtures/continuing_adapter.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.continuing_adapter import WIDTH, answer
from tests.support.durable import own_temporal
from tests.support.procs import ServerProcess
from tests.support.sse import (
    A2A,
    Frame,
    get_task_json,
    read_frames,
    sse_frames,
    state_of,
    stream_request,
    subscribe_request,
    task_id_of,
)

pytestmark = pytest.mark.temporal

ADAPTER = Path(__file__).resolve().parent / "fixtures" / "continuing_adapter.py"


def _store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    return request.getfixturevalue("postgres").database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _store_url(request, tmp_path)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Also the memory store: a retry in the same process reads the stored task."""
    return _store_url(request, tmp_path)


def env_for(temporal_address: str, store_url: str) -> dict[str, str]:
    return {
        **own_temporal(temporal_address),
        "ADAPTER_MODULE": str(ADAPTER),
        "TASK_STORE_URL": store_url,
        "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
        "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.2",
        "TEMPORAL_SCHEDULE_TO_START_TIMEOUT": "3",
    }


class Answer:
    """One client's view of the answer artifact (and the others), update by update."""

    def __init__(self, answer_id: str) -> None:
        self.answer_id = answer_id
        self.text = ""  # as the client holds it, applying append / replace
        self.chunks: list[str] = []  # the text each appending update brought
        # append:false updates of the answer after its first one (which creates it)
        self.replaced: list[dict[str, Any]] = []
        self.started = False
        self.closing: str | None = None

    def apply(self, payload: dict[str, Any]) -> None:
        update = payload.get("artifactUpdate")
        if update is None or update["artifact"]["artifactId"] != self.answer_id:
            return
        assert self.closing is None, "an update of the answer after its closing update"
        text = "".join(p.get("text", "") for p in update["artifact"].get("parts", []))
        started, self.started = self.started, True
        if update.get("append") or not started:
            self.text += text
            self.chunks.append(text)
            return
        if update.get("lastChunk"):
            # The closing update repeats the whole answer (it may also carry the
            # last chunks, merged into it): `text` keeps what streamed before it.
            self.closing = text
            return
        self.replaced.append(update)
        self.text = text


def attempts(record: Path) -> dict[int, dict[str, Any]]:
    """Per attempt: its start line, and the chunks it generated."""
    out: dict[int, dict[str, Any]] = {}
    for line in record.read_text().splitlines():
        item = json.loads(line)
        entry = out.setdefault(item["attempt"], {"generated": []})
        if "chunk" in item:
            entry["generated"].append(item["chunk"])
        else:
            entry.update(item)
    return out


def check_generated(record: Path, chunks: int, stored_prefix: int) -> None:
    """The retry started from the stored prefix and generated only the rest."""
    runs = attempts(record)
    assert sorted(runs) == [1, 2], runs.keys()
    second = runs[2]
    assert second["first"] == stored_prefix > 0, second
    assert second["partial"] == stored_prefix * WIDTH
    assert second["generated"] == list(range(stored_prefix, chunks))
    # The first attempt did get past what was stored, or the test proves nothing.
    assert runs[1]["generated"][-1] >= stored_prefix - 1


async def test_a_retry_after_an_error_continues_the_stored_answer(
    temporal_server, any_store_url: str, server_factory, tmp_path: Path
) -> None:
    chunks, record = 40, tmp_path / "record.jsonl"
    server: ServerProcess = server_factory(env_for(temporal_server.address, any_store_url))
    script = {"chunks": chunks, "fail_at": 15, "delay": 0.01, "record": str(record), "outputs": True}
    async with httpx.AsyncClient(timeout=60) as http:
        frames = await _frames(http, stream_request("JSONRPC", server.url, "go", script), timeout=60)
        task_id = task_id_of(frames)
        assert state_of(frames[-1][1]) == "TASK_STATE_COMPLETED", frames[-1]
        view = Answer(f"{task_id}-answer")
        for _, payload in frames:
            view.apply(payload)
        statuses = [
            "".join(p.get("text", "") for p in f["statusUpdate"]["status"].get("message", {}).get("parts", []))
            for _, f in frames
            if "statusUpdate" in f
        ]
        assert "Retrying: attempt 2 continues the answer." in statuses, statuses
        # Never taken back: every update of the answer appends, then the closing one.
        assert view.replaced == []
        assert view.closing == answer(chunks)
        assert answer(chunks).startswith(view.text)  # each chunk once, in order
        stored = await get_task_json(http, server.url, task_id)
    by_id = {a["artifactId"]: a for a in stored["artifacts"]}
    parts = by_id[f"{task_id}-answer"]["parts"]
    # The data the replayed step gave is in the answer once, the text exactly once.
    assert [p["data"] for p in parts if "data" in p] == [{"rows": 3}]
    assert "".join(p.get("text", "") for p in parts) == answer(chunks)
    report = by_id[f"{task_id}-answer.report"]["parts"]
    assert "".join(p.get("text", "") for p in report) == "report of 3 rows"
    # The retry in the same process waited for attempt 1's chunks to be stored
    # and continued from them (the ones it had not sent yet were never streamed).
    check_generated(record, chunks, attempts(record)[2]["first"])


async def _frames(http: httpx.AsyncClient, request: tuple[str, str, Any], timeout: float) -> list[Frame]:
    """A stream's frames until it ends (the memory store's carry no ids: 0)."""
    method, target, body = request
    frames: list[Frame] = []
    async with asyncio.timeout(timeout):
        async with http.stream(method, target, json=body, headers=A2A) as response:
            assert response.status_code == 200, await response.aread()
            async for event_id, payload in sse_frames(response):
                frames.append((int(event_id) if event_id is not None else 0, payload))
    return frames


async def _live(http: httpx.AsyncClient, url: str, script: dict[str, Any], frames: list[Frame]) -> None:
    """Stream a new task, keeping every frame, until the server dies under it."""
    method, target, body = stream_request("JSONRPC", url, "go", script)
    with contextlib.suppress(httpx.HTTPError):
        async with http.stream(method, target, json=body, headers=A2A) as response:
            async for event_id, payload in sse_frames(response):
                assert event_id is not None, payload
                frames.append((int(event_id), payload))


async def _half_way(live: list[Frame], reader: asyncio.Task[None], chunks: int) -> None:
    """Until the live client has seen half of the answer."""
    deadline = time.monotonic() + 60
    while True:
        seen = sum(
            len(p.get("text", ""))
            for _, f in live
            if "artifactUpdate" in f
            for p in f["artifactUpdate"]["artifact"].get("parts", [])
        )
        if seen >= chunks // 2 * WIDTH:
            return
        assert not reader.done() and time.monotonic() < deadline, live[-3:]
        await asyncio.sleep(0.005)


def check_exactly_once(view: Answer, seen_live: str, stored: dict[str, Any], record: Path, chunks: int) -> None:
    """Every character of the answer reached the client once, in order, never taken back."""
    whole = answer(chunks)
    # No append:false update of the answer before its closing one, which holds it whole.
    assert view.replaced == []
    assert view.closing == whole
    assert "".join(p.get("text", "") for a in stored["artifacts"] for p in a["parts"]) == whole
    # The retry continued from what the store held and generated only the rest.
    stored_prefix = attempts(record)[2]["first"]
    check_generated(record, chunks, stored_prefix)
    # Write-ahead streaming: the live client was only sent what was stored, so
    # the continuation repeats none of it.
    assert seen_live == whole[: len(seen_live)]
    assert len(seen_live) <= stored_prefix * WIDTH, (len(seen_live), stored_prefix * WIDTH)
    # The resumed stream brought what the client had not seen: stored chunks of
    # attempt 1 it had not read yet, then the continuation; once each, in order
    # (its last chunks may come only with the closing update).
    assert whole.startswith(view.text), (len(seen_live), len(view.text))
    assert view.text.startswith(seen_live)


async def test_kill_9_half_way_a_resuming_client_never_sees_the_answer_taken_back(
    temporal_server, store_url: str, server_factory, tmp_path: Path
) -> None:
    chunks, record = 200, tmp_path / "record.jsonl"
    env = env_for(temporal_server.address, store_url)
    workdir = tmp_path / "a"
    server: ServerProcess = server_factory(env, workdir=workdir)
    script = {"chunks": chunks, "delay": 0.02, "record": str(record)}
    async with httpx.AsyncClient(timeout=60) as http:
        live: list[Frame] = []
        reader = asyncio.create_task(_live(http, server.url, script, live))
        await _half_way(live, reader, chunks)
        server.kill()  # SIGKILL half-way through the answer
        await asyncio.wait_for(reader, 10)
        task_id = task_id_of(live)
        view = Answer(f"{task_id}-answer")
        for _, payload in live:
            view.apply(payload)
        seen_live = view.text

        restarted = server_factory(env, workdir=workdir, port=server.port)
        after = await read_frames(
            http,
            subscribe_request("JSONRPC", restarted.url, task_id),
            last_event_id=live[-1][0],
            timeout=90,
        )
        assert after[0][0] > live[-1][0]
        assert state_of(after[-1][1]) == "TASK_STATE_COMPLETED", after[-1]
        for _, payload in after:
            view.apply(payload)
        stored = await get_task_json(http, restarted.url, task_id)
    check_exactly_once(view, seen_live, stored, record, chunks)


async def test_sigterm_half_way_the_other_replica_continues_and_a_resuming_client_sees_each_chunk_once(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    """A deploy: replica A hands the attempt back at SIGTERM, replica B continues the
    stored answer; the client that streamed from A resumes on B. (400 chunks: the
    half left outlasts the shutdown's grace, so the attempt is cut.)"""
    chunks, record = 400, tmp_path / "record.jsonl"
    env = {
        **env_for(temporal_server.address, f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"),
        "MOLECULE_SHUTDOWN_GRACE": "1",
    }
    replica_a = server_factory({**env, "MOLECULE_INSTANCE_ID": "a"}, workdir=tmp_path / "a")
    replica_b = server_factory({**env, "MOLECULE_INSTANCE_ID": "b"}, workdir=tmp_path / "b")
    script = {"chunks": chunks, "delay": 0.02, "record": str(record)}
    async with httpx.AsyncClient(timeout=60) as http:
        live: list[Frame] = []
        reader = asyncio.create_task(_live(http, replica_a.url, script, live))
        await _half_way(live, reader, chunks)
        assert replica_a.proc is not None
        os.kill(replica_a.proc.pid, signal.SIGTERM)
        await asyncio.wait_for(reader, 30)
        task_id = task_id_of(live)
        view = Answer(f"{task_id}-answer")
        for _, payload in live:
            view.apply(payload)
        seen_live = view.text
        # The live stream may end with the task's state (it is not final here).
        ids = [event_id for event_id, _ in live]
        after = await read_frames(
            http,
            subscribe_request("JSONRPC", replica_b.url, task_id),
            last_event_id=max(ids),
            timeout=90,
        )
        assert state_of(after[-1][1]) == "TASK_STATE_COMPLETED", after[-1]
        for _, payload in after:
            view.apply(payload)
        stored = await get_task_json(http, replica_b.url, task_id)
    check_exactly_once(view, seen_live, stored, record, chunks)
    assert {run["pid"] for run in attempts(record).values()} == {replica_a.proc.pid, replica_b.proc.pid}

"""Multi-turn durable tasks whose turns hop between replicas (real Temporal dev server,
two real server processes on one task store).

The workflow stays cached (sticky) on the replica that started it, so its local
`task_complete` (which stores the question) runs there, while the turn's stream and
`llm_call` are on the replica that took the answer: that stream must still end at
input-required with the question, promptly, and the next answer must be taken on
either replica."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.scripted_adapter import read_records
from tests.support.durable import durable_env
from tests.support.sse import get_task_json, read_frames, state_of, stream_request, task_id_of

pytestmark = pytest.mark.temporal

TURNS_ADAPTER = Path(__file__).resolve().parent / "fixtures" / "turns_adapter.py"


def turns_env(temporal_address: str, records: Path, store_url: str) -> dict[str, str]:
    env = durable_env(temporal_address, records, TASK_STORE_URL=store_url)
    env["ADAPTER_MODULE"] = str(TURNS_ADAPTER)
    env["ADAPTER_OPTIONS"] = json.dumps({"record_dir": str(records)})
    return env


def status_text(payload: dict[str, Any]) -> str:
    body = payload.get("statusUpdate") or payload.get("task") or {}
    message = body.get("status", {}).get("message", {})
    return "".join(p.get("text", "") for p in message.get("parts", []))


async def turn(
    http: httpx.AsyncClient,
    base: str,
    text: str,
    *,
    task: tuple[str, str] | None = None,
    ask: str = "",
    timeout: float = 20.0,
) -> tuple[list[tuple[int, dict[str, Any]]], float]:
    """One SendStreamingMessage read to its end: its frames and how long it took."""
    method, url, body = stream_request("JSONRPC", base, text, {"ask": ask} if ask else None)
    if task is not None:
        body["params"]["message"].update({"taskId": task[0], "contextId": task[1]})
    started = time.monotonic()
    frames = await read_frames(http, (method, url, body), timeout=timeout)
    return frames, time.monotonic() - started


def ends_asking(frames: list[tuple[int, dict[str, Any]]], question: str) -> None:
    last = frames[-1][1]
    assert state_of(last) == "TASK_STATE_INPUT_REQUIRED", frames
    assert status_text(last) == question, frames


async def hop_turns(starter_url: str, other_url: str, records: Path) -> dict[str, Any]:
    """Start on one replica, answer twice on the other (two questions in a row asked
    there), answer the last time on the starter; the figures of the hops."""
    async with httpx.AsyncClient(timeout=30) as http:
        first, _ = await turn(http, starter_url, "t1", ask="q1?")
        ends_asking(first, "q1?")
        task_id = task_id_of(first)
        ids = (task_id, first[0][1]["task"]["contextId"])
        second, took2 = await turn(http, other_url, "t2", task=ids, ask="q2?")
        ends_asking(second, "q2?")
        third, took3 = await turn(http, other_url, "t3", task=ids, ask="q3?")
        ends_asking(third, "q3?")
        last, _ = await turn(http, starter_url, "t4", task=ids)
        assert state_of(last[-1][1]) == "TASK_STATE_COMPLETED", last
        stored = await get_task_json(http, other_url, task_id)
    assert stored["status"]["state"] == "TASK_STATE_COMPLETED"
    # Each user message and each question once in the task's history, in order.
    history = [
        ("".join(p.get("text", "") for p in m["parts"]), m["role"]) for m in stored["history"]
    ]
    assert history == [
        ("t1", "ROLE_USER"), ("q1?", "ROLE_AGENT"),
        ("t2", "ROLE_USER"), ("q2?", "ROLE_AGENT"),
        ("t3", "ROLE_USER"), ("q3?", "ROLE_AGENT"),
        ("t4", "ROLE_USER"),
    ], history
    runs = read_records(records, task_id)
    assert [r["text"] for r in runs if r["event"] == "done"] == ["t1", "t2", "t3", "t4"], runs
    # The last turn saw the whole conversation of the task.
    assert runs[-1]["history"] == [
        ["user", "t1"], ["assistant", "t1-0 t1-1 q1?"],
        ["user", "t2"], ["assistant", "t2-0 t2-1 q2?"],
        ["user", "t3"], ["assistant", "t3-0 t3-1 q3?"],
    ], runs[-1]
    return {"task": task_id, "hop_seconds": [round(took2, 2), round(took3, 2)]}


@pytest.mark.parametrize("direction", ["a_to_b", "b_to_a"])
async def test_questions_asked_on_one_replica_reach_the_stream_on_the_other(
    temporal_server, server_factory, tmp_path: Path, direction: str
) -> None:
    records = tmp_path / "records"
    store = f"sqlite+aiosqlite:///{tmp_path / 'shared' / 'tasks.db'}"
    (tmp_path / "shared").mkdir()
    env = turns_env(temporal_server.address, records, store)
    a = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-a"})
    b = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-b"})
    starter, other = (a, b) if direction == "a_to_b" else (b, a)
    figures = await hop_turns(starter.url, other.url, records)
    # The workflow stayed on the starter, so the other replica's streams ended
    # with questions stored there.
    assert "relayed to this stream" in other.log_path.read_text(), other.log()
    print(figures)

"""A rolling restart of two durable replicas under a steady stream of tasks, some
with an input-required turn answered on the other replica: every turn runs to
completion exactly once (real Temporal dev server, two real server processes on one
SQLite task store; each replica gets SIGTERM, then starts again on its port)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.scripted_adapter import read_records
from tests.support.durable import durable_env
from tests.support.procs import ServerProcess
from tests.support.sse import A2A, aiter_sse, message_json, state_of

pytestmark = pytest.mark.temporal

TURNS_ADAPTER = Path(__file__).resolve().parent / "fixtures" / "turns_adapter.py"
LAUNCH_EVERY = 0.4  # seconds between new tasks
TURN = {"chunks": 6, "delay": 0.2}  # 1.2 s of streaming per turn
SETTLED = {"TASK_STATE_COMPLETED", "TASK_STATE_INPUT_REQUIRED"}


class Load:
    """Clients that send tasks to whichever replica answers, follow them to the end
    whatever happens to the replica holding their stream, and note what they saw."""

    def __init__(self, replicas: list[ServerProcess]) -> None:
        self.replicas = replicas
        self.tasks: dict[str, dict[str, Any]] = {}
        self.max_stall = 0.0  # longest silence of a stream or a wait for a state
        self.answers_refused = 0
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30, connect=2))

    async def _send(self, prefer: int, text: str, meta: dict[str, Any], task: tuple[str, str] | None):
        """Stream one message; on a refused connection or a cut stream, try the other
        replica / follow the task by GetTask. Returns (task id, context id, final state)."""
        message = message_json(text, metadata=meta, task_id=task[0] if task else "",
                               context_id=task[1] if task else "")
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": {"message": message}}
        ids = task
        for n in range(40):
            replica = self.replicas[(prefer + n) % 2]
            last_seen = time.monotonic()
            state = None
            try:
                async with self.http.stream("POST", replica.url + "/", json=body, headers=A2A) as response:
                    if response.status_code != 200:
                        await asyncio.sleep(0.2)
                        continue
                    async for _, payload in aiter_sse(response):
                        now = time.monotonic()
                        self.max_stall = max(self.max_stall, now - last_seen)
                        last_seen = now
                        if "error" in payload:
                            break
                        result = payload["result"]
                        if ids is None and "task" in result:
                            ids = (result["task"]["id"], result["task"]["contextId"])
                        state = state_of(result) or state
            except httpx.HTTPError:
                pass
            if ids is not None:
                # Taken (maybe cut mid-stream): the task goes on; read its state.
                return ids, await self._settled(ids[0], state, since=last_seen)
            await asyncio.sleep(0.2)
        raise AssertionError(f"no replica took {text!r}")

    async def _settled(self, task_id: str, state: str | None, since: float) -> str:
        if state in SETTLED and state != "TASK_STATE_INPUT_REQUIRED":
            return state
        deadline = time.monotonic() + 60
        body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": task_id}}
        n = 0
        while time.monotonic() < deadline:
            replica = self.replicas[n % 2]
            n += 1
            try:
                got = (await self.http.post(replica.url + "/", json=body, headers=A2A)).json()
                current = got["result"]["status"]["state"]
                if current in SETTLED:
                    self.max_stall = max(self.max_stall, time.monotonic() - since)
                    return current
                if current in ("TASK_STATE_FAILED", "TASK_STATE_CANCELED"):
                    task = got["result"]
                    why = "".join(p.get("text", "") for p in task["status"].get("message", {}).get("parts", []))
                    raise AssertionError(
                        f"task {task_id} ended {current}: {why!r}; metadata {task.get('metadata')}; "
                        f"artifacts {[a['parts'] for a in task.get('artifacts', [])]}"
                    )
            except (httpx.HTTPError, KeyError):
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"task {task_id} did not settle")

    async def stored(self, task_id: str) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": task_id}}
        return (await self.http.post(self.replicas[0].url + "/", json=body, headers=A2A)).json()["result"]

    async def conversation(self, n: int) -> None:
        started = time.monotonic()
        asks = n % 2 == 1
        meta = {**TURN, **({"ask": f"q{n}?"} if asks else {})}
        ids, state = await self._send(n % 2, f"t{n}", meta, None)
        turns = [f"t{n}"]
        if asks:
            assert state == "TASK_STATE_INPUT_REQUIRED", (ids, state)
            for attempt in range(10):
                # A replica going down may refuse the answer (it says so, the task
                # keeps waiting): the client sends it again, as it would any refusal.
                ids, state = await self._send(n % 2 + 1 + attempt, f"a{n}", dict(TURN), ids)
                if state != "TASK_STATE_INPUT_REQUIRED":
                    break
                self.answers_refused += 1
            turns.append(f"a{n}")
        assert state == "TASK_STATE_COMPLETED", (ids, state)
        self.tasks[ids[0]] = {"turns": turns, "seconds": time.monotonic() - started}


async def test_rolling_restart_of_two_replicas_every_task_completes_once(
    temporal_server, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    (tmp_path / "shared").mkdir()
    env = durable_env(
        temporal_server.address,
        records,
        TASK_STORE_URL=f"sqlite+aiosqlite:///{tmp_path / 'shared' / 'tasks.db'}",
        MOLECULE_SHUTDOWN_GRACE="1",
        TEMPORAL_SCHEDULE_TO_START_TIMEOUT="2",
        ADAPTER_MODULE=str(TURNS_ADAPTER),
        ADAPTER_OPTIONS=json.dumps({"record_dir": str(records)}),
    )
    replicas = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        replicas.append(ServerProcess(tmp_path / name, {**env, "MOLECULE_INSTANCE_ID": f"replica-{name}"}))
    load = Load(replicas)
    conversations: list[asyncio.Task[None]] = []
    restarts = 0
    try:
        for replica in replicas:
            await asyncio.to_thread(replica.start)

        async def launch(until: asyncio.Event) -> None:
            n = 0
            while not until.is_set():
                conversations.append(asyncio.create_task(load.conversation(n)))
                n += 1
                await asyncio.sleep(LAUNCH_EVERY)

        stop_launching = asyncio.Event()
        launcher = asyncio.create_task(launch(stop_launching))
        began = time.monotonic()
        await asyncio.sleep(3)
        for replica in replicas:  # one after the other, as a deploy does
            await asyncio.to_thread(replica.stop)  # SIGTERM; returns once it exited
            assert replica.proc is not None and replica.proc.returncode == 0, replica.log()
            await asyncio.to_thread(replica.start)
            restarts += 1
            await asyncio.sleep(2)
        stop_launching.set()
        await launcher
        await asyncio.gather(*conversations)
        wall = time.monotonic() - began
        stored = {task_id: await load.stored(task_id) for task_id in load.tasks}
    finally:
        await load.http.aclose()
        for replica in replicas:
            replica.stop()
    assert restarts == 2
    assert len(load.tasks) == len(conversations) >= 20
    reruns = 0
    for task_id, seen in load.tasks.items():
        done = [(r["text"], r["attempt"]) for r in read_records(records, task_id) if r["event"] == "done"]
        # Each turn ran to its end; a second run is only a later attempt, after a
        # shutdown handed back an attempt whose events were not all stored.
        assert sorted({text for text, _ in done}) == sorted(seen["turns"]), (task_id, done)
        assert len(set(done)) == len(done), (task_id, done)  # never two runs of one attempt
        reruns += len(done) - len(seen["turns"])
        # Completed once, with exactly one attempt's text per turn.
        task = stored[task_id]
        assert task["status"]["state"] == "TASK_STATE_COMPLETED", task["status"]
        # Taken by a draining replica too, a task runs durably, never directly.
        assert task.get("metadata", {}).get("molecule.mode") != "direct", task.get("metadata")
        texts = ["".join(p.get("text", "") for p in a["parts"]) for a in task["artifacts"]]
        assert texts == [f"{t}-0 {t}-1 {t}-2 {t}-3 {t}-4 {t}-5 " for t in seen["turns"]], texts
    seconds = sorted(t["seconds"] for t in load.tasks.values())
    figures = {
        "tasks": len(load.tasks),
        "input_required_tasks": sum(len(t["turns"]) == 2 for t in load.tasks.values()),
        "restarts": restarts,
        "answers_refused_then_resent": load.answers_refused,
        "turns_rerun_after_handover": reruns,
        "max_stall_s": round(load.max_stall, 2),
        "completion_p50_s": round(statistics.median(seconds), 2),
        "completion_max_s": round(seconds[-1], 2),
        "wall_s": round(wall, 1),
    }
    print(figures)

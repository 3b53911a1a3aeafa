"""Scale-out without containers: the docker-compose topology as local processes.

One Temporal dev server, one PostgreSQL, two runtime replicas and one
worker-only process, all on the same task queue, workspace and task store.
One replica is killed with SIGKILL mid-task and never restarted: its tasks
must still complete (headless, on the surviving processes) and be readable
from the other replica, each with exactly one execution's text.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    SubscribeToTaskRequest,
    TaskState,
)

from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import BackgroundStream, make_client, task_text, wait_terminal
from tests.support.durable import durable_env, readyz, scripted_message
from tests.support.postgres import PostgresServer
from tests.support.procs import ServerProcess

pytestmark = pytest.mark.temporal

CHUNKS = 20
DELAY = 0.15  # 3 s per task: long enough to be killed mid-stream




def final_state(event) -> int:
    which = event.WhichOneof("payload")
    if which == "task":
        return event.task.status.state
    if which == "status_update":
        return event.status_update.status.state
    return TaskState.TASK_STATE_UNSPECIFIED


def start_worker(workdir: Path, env: dict[str, str], timeout: float = 60.0) -> ServerProcess:
    """`molecule-runtime worker`: no HTTP port, so readiness is its start-up log line."""
    workdir.mkdir(parents=True, exist_ok=True)
    worker = ServerProcess(workdir, env, command="worker").start(wait=False)
    deadline = time.monotonic() + timeout
    while "durable mode: Temporal" not in worker.log():
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.log()}")
        if time.monotonic() > deadline:
            worker.stop()
            raise TimeoutError(f"worker not polling after {timeout}s:\n{worker.log()}")
        time.sleep(0.05)
    return worker


async def test_replica_killed_mid_task_its_tasks_finish_elsewhere(
    temporal_server, postgres: PostgresServer, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = durable_env(
        temporal_server.address,
        records,
        TASK_STORE_URL=postgres.database(),
        TEMPORAL_HEARTBEAT_TIMEOUT="2",
        TEMPORAL_SCHEDULE_TO_START_TIMEOUT="3",
    )
    # Stable, unique instance ids, as in docker-compose.yml.
    replica_a = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-a"}, workdir=tmp_path / "a")
    replica_b = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-b"}, workdir=tmp_path / "b")
    worker = start_worker(tmp_path / "w", {**env, "MOLECULE_INSTANCE_ID": "worker-1"})
    try:
        for replica in (replica_a, replica_b):
            ready = (await readyz(replica.url)).json()
            assert ready["mode"] == "durable", ready
        await _kill_one_replica_mid_task(replica_a, replica_b, worker, records)
    finally:
        worker.stop()
    assert worker.proc is not None and worker.proc.returncode == 0, worker.log()


async def _kill_one_replica_mid_task(
    replica_a: ServerProcess, replica_b: ServerProcess, worker: ServerProcess, records: Path
) -> None:
    clients = {"a": await make_client(replica_a.url), "b": await make_client(replica_b.url)}
    # Clients spread over both replicas: three tasks each. Only replica a's streams may
    # break: it is the one killed.
    keys = [f"{r}{i}" for r in "ab" for i in range(3)]
    streams = {
        key: BackgroundStream(
            clients[key[0]],
            scripted_message(chunks=CHUNKS, delay=DELAY, label=f"{key}-"),
            may_break=key[0] == "a",
        )
        for key in keys
    }
    # One deadline for all: the streams run side by side.
    await asyncio.gather(*(stream.wait_chunks(2, timeout=30) for stream in streams.values()))
    task_ids = {key: streams[key].task_id for key in keys}
    assert replica_a.proc is not None
    killed_pid = replica_a.proc.pid
    replica_a.kill()  # SIGKILL mid-stream; never restarted
    killed_at = time.monotonic()

    # Someone on the surviving replica follows one of the orphaned tasks: the
    # recovery's events reach it through the shared store's event log.
    follower = await make_client(replica_b.url)
    followed: list = []

    async def follow() -> None:
        async for event in follower.subscribe(SubscribeToTaskRequest(id=task_ids["a0"])):
            followed.append(event)

    following = asyncio.create_task(follow())

    survivor = clients["b"]
    expected = {key: "".join(f"{key}-{i} " for i in range(CHUNKS)) for key in keys}
    finished = {}
    for key in keys:
        finished[key] = await wait_terminal(survivor, task_ids[key], timeout=60)
    recovery = time.monotonic() - killed_at
    await asyncio.gather(*(stream.finish(30) for stream in streams.values()))
    await asyncio.wait_for(following, 15)

    for key in keys:
        task = finished[key]
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, (key, task)
        # Exactly one execution's text: a retry restarts the artifact, never appends.
        assert task_text(task) == expected[key], (key, task_text(task))
        recs = read_records(records, task_ids[key])
        done = [r for r in recs if r["event"] == "done"]
        assert len(done) == 1, (key, recs)
        starts = [r for r in recs if r["event"] == "start"]
        if key.startswith("b"):
            # Untouched by the crash: one attempt, on replica b.
            assert len(starts) == 1, (key, recs)
        else:
            assert starts[0]["pid"] == killed_pid, (key, recs)
            assert done[0]["pid"] != killed_pid, (key, recs)
    # The streams on replica b carried the whole answer too.
    for key in ("b0", "b1", "b2"):
        assert streams[key].events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED

    states = [
        e.status_update.status.state for e in followed if e.WhichOneof("payload") == "status_update"
    ]
    assert states and states[-1] == TaskState.TASK_STATE_COMPLETED, followed
    # heartbeat timeout (2 s) + schedule-to-start timeout (3 s) + a full re-run (3 s), with slack
    # for a loaded 2-core machine.
    assert recovery < 2 + 3 + CHUNKS * DELAY + 20, recovery

    recovered_by = {
        r["pid"] for key in keys if key.startswith("a")
        for r in read_records(records, task_ids[key]) if r["event"] == "done"
    }
    assert worker.proc is not None and replica_b.proc is not None
    assert recovered_by <= {worker.proc.pid, replica_b.proc.pid}, recovered_by
    who = {worker.proc.pid: "worker", replica_b.proc.pid: "replica-b"}
    print(f"recovery {recovery:.1f}s after SIGKILL; finished by {sorted(who[p] for p in recovered_by)}")
    for client in (*clients.values(), follower):
        await client.close()


async def test_cancel_sent_to_the_other_replica(
    temporal_server, postgres: PostgresServer, server_factory, tmp_path: Path
) -> None:
    """Behind a load balancer CancelTask may reach a replica that is not running the task."""
    records = tmp_path / "records"
    env = durable_env(temporal_server.address, records, TASK_STORE_URL=postgres.database())
    replica_a = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-a"}, workdir=tmp_path / "a")
    replica_b = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-b"}, workdir=tmp_path / "b")
    client_a = await make_client(replica_a.url)
    client_b = await make_client(replica_b.url)
    stream = BackgroundStream(client_a, scripted_message(chunks=200, delay=0.05))
    await stream.wait_chunks(2, timeout=20)
    task_id = stream.task_id

    # Replica b sees the running task in the shared store.
    running = await client_b.get_task(GetTaskRequest(id=task_id))
    assert running.status.state == TaskState.TASK_STATE_WORKING, running

    sent = time.time()
    result = await client_b.cancel_task(CancelTaskRequest(id=task_id))
    assert result.status.state == TaskState.TASK_STATE_CANCELED, result
    deadline = time.monotonic() + 15
    while not [r for r in read_records(records, task_id) if r["event"] == "cancelled"]:
        assert time.monotonic() < deadline, read_records(records, task_id)
        await asyncio.sleep(0.05)
    cancelled = next(r for r in read_records(records, task_id) if r["event"] == "cancelled")
    assert cancelled["pid"] == replica_a.proc.pid  # type: ignore[union-attr]
    # A hang bound (the answer runs 10 s): the cancel latency is a figure of bench.run.
    assert cancelled["t"] - sent < 8, cancelled["t"] - sent
    seen = await stream.finish(15)
    # The stream ends in the canceled state. (Cancelled on the same replica it
    # ends with a status update; cancelled from the other one the stream's
    # last event is the Task snapshot: both are terminal for A2A clients.)
    assert final_state(seen[-1]) == TaskState.TASK_STATE_CANCELED, seen[-1]
    for client in (client_a, client_b):
        task = await wait_terminal(client, task_id)
        assert task.status.state == TaskState.TASK_STATE_CANCELED
    assert not [r for r in read_records(records, task_id) if r["event"] == "done"]
    await client_a.close()
    await client_b.close()

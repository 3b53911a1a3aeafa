"""Two replicas, one store, a burst of durable tasks sent to one of them.

When Temporal does not hand a workflow's first task to the process that
started it (eager start refused: no free slot under a burst, or a server that
does not do eager starts), that task, with the `task_receive` local activity,
runs on whichever replica polls it first, while the client's live stream is
held by the other. Every task must still complete once, with its exact text.

The dev server here refuses every eager start, so about half the tasks take
that path on every run instead of a few under a heavy burst.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import GetTaskRequest, SendMessageRequest, Task, TaskState

from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import make_client, task_text
from tests.support.durable import durable_env, scripted_message
from tests.support.procs import ServerProcess
from tests.support.temporal import TemporalDevServer

pytestmark = pytest.mark.temporal

TASKS = 16
CHUNKS = 10
DELAY = 0.05


@pytest.fixture(scope="module")
def no_eager_temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(
        tmp_path_factory.mktemp("temporal-no-eager"),
        dynamic_config=("system.enableEagerWorkflowStart=false",),
    ).start()
    try:
        yield server
    finally:
        server.stop()


def _replicas(
    server_factory, temporal: TemporalDevServer, tmp_path: Path, records: Path, **extra: str
) -> tuple[ServerProcess, ServerProcess]:
    env = durable_env(
        temporal.address,
        records,
        **{
            "TASK_STORE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}",
            "TEMPORAL_HEARTBEAT_TIMEOUT": "5",
            **extra,
        },
    )
    a = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-a"}, workdir=tmp_path / "a")
    b = server_factory({**env, "MOLECULE_INSTANCE_ID": "replica-b"}, workdir=tmp_path / "b")
    return a, b


async def test_burst_on_one_replica_completes_every_task_once(
    no_eager_temporal: TemporalDevServer, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    replica_a, replica_b = _replicas(server_factory, no_eager_temporal, tmp_path, records)
    client = await make_client(replica_a.url, streaming=False)
    messages = [
        scripted_message(chunks=CHUNKS, delay=DELAY, label=f"t{i}-") for i in range(TASKS)
    ]

    async def send(message) -> object:
        responses = [r async for r in client.send_message(SendMessageRequest(message=message))]
        return responses[-1].task

    try:
        tasks = await asyncio.wait_for(asyncio.gather(*(send(m) for m in messages)), 120)
        for i, task in enumerate(tasks):
            expected = "".join(f"t{i}-{n} " for n in range(CHUNKS))
            assert task.status.state == TaskState.TASK_STATE_COMPLETED, (i, task)
            assert task_text(task) == expected, (i, task_text(task))
            stored = await client.get_task(GetTaskRequest(id=task.id))
            assert task_text(stored) == expected, (i, task_text(stored))
            starts = [r for r in read_records(records, task.id) if r["event"] == "start"]
            assert len(starts) == 1, (i, read_records(records, task.id))
    finally:
        await client.close()
    for replica in (replica_a, replica_b):
        log = replica.log()
        assert "modified concurrently" not in log, log[-4000:]
        assert " ERROR " not in log, log[-4000:]


async def _sigterm_mid_burst(
    replica_a: ServerProcess, replica_b: ServerProcess, records: Path, label: str, running: int
) -> list[tuple[Task, bool]]:
    """Eight blocking sends of 30 chunks to A, SIGTERM to A once `running` adapters
    have started; a send A tells to send again goes to B. Every send's final task,
    each checked complete with its exact text, and whether A told it to resend
    (never handed the unfinished task as its answer). A exits cleanly."""
    client_a = await make_client(replica_a.url, streaming=False)
    client_b = await make_client(replica_b.url, streaming=False)
    chunks = 30
    messages = [scripted_message(chunks=chunks, delay=0.1, label=f"{label}{i}-") for i in range(8)]

    async def send(client, message) -> Task:
        responses = [r async for r in client.send_message(SendMessageRequest(message=message))]
        return responses[-1].task

    results: list[tuple[Task, bool]] = []
    try:
        sends = [asyncio.ensure_future(send(client_a, m)) for m in messages]
        deadline = asyncio.get_running_loop().time() + 30
        while sum(1 for _ in records.glob("*.jsonl")) < running:
            assert asyncio.get_running_loop().time() < deadline, "the tasks did not start"
            await asyncio.sleep(0.05)
        assert replica_a.proc is not None
        os.kill(replica_a.proc.pid, signal.SIGTERM)
        answers = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 60)
        for i, (message, answer) in enumerate(zip(messages, answers, strict=True)):
            told = isinstance(answer, BaseException)
            if told:
                assert "send the same message again" in str(answer), (i, repr(answer))
                answer = await asyncio.wait_for(send(client_b, message), 60)
            expected = "".join(f"{label}{i}-{n} " for n in range(chunks))
            assert answer.status.state == TaskState.TASK_STATE_COMPLETED, (i, answer)
            assert task_text(answer) == expected, (i, task_text(answer))
            results.append((answer, told))
    finally:
        await client_a.close()
        await client_b.close()
    assert replica_a.proc.wait(30) == 0
    log = replica_a.log()
    assert " ERROR " not in log and "Traceback" not in log, log[-6000:]
    return results


async def test_sigterm_mid_burst_hands_tasks_over_and_tells_blocking_clients(
    no_eager_temporal: TemporalDevServer, server_factory, tmp_path: Path
) -> None:
    """A deploy: SIGTERM to the replica holding a burst of blocking sends. No task
    fails; a client whose task is not finished when its replica goes is told to
    send the message again (never handed the unfinished task as its answer), and
    the repeat, on the other replica, returns the task's result."""
    records = tmp_path / "records"
    replica_a, replica_b = _replicas(
        server_factory, no_eager_temporal, tmp_path, records, MOLECULE_SHUTDOWN_GRACE="1"
    )
    results = await _sigterm_mid_burst(replica_a, replica_b, records, "s", running=8)
    assert any(told for _, told in results), "every task finished within the grace: the test proved nothing"


async def test_sigterm_without_a_restart_leaves_no_task_behind(
    no_eager_temporal: TemporalDevServer, server_factory, tmp_path: Path
) -> None:
    """A scale-in: SIGTERM to the replica holding a burst, most of it still waiting
    for a running slot (two at once), and the replica is not started again. Every
    task, the waiting ones too, completes on the other replica; none is left
    submitted for a restart that never comes."""
    records = tmp_path / "records"
    replica_a, replica_b = _replicas(
        server_factory,
        no_eager_temporal,
        tmp_path,
        records,
        MOLECULE_SHUTDOWN_GRACE="3",
        MOLECULE_MAX_RUNNING_TASKS="2",
    )
    results = await _sigterm_mid_burst(replica_a, replica_b, records, "w", running=2)
    assert replica_b.proc is not None
    waited = sum(
        all(r["pid"] == replica_b.proc.pid for r in read_records(records, task.id) if r["event"] == "start")
        for task, _ in results
    )
    assert waited >= 4, "fewer tasks than expected were still waiting: the test proved little"


# Alone: under a neighbour's load, attempts also time out on heartbeats, which is
# not what this test is about.
@pytest.mark.serial
async def test_llm_call_that_hops_to_the_other_replica_ends_this_replicas_stream(
    no_eager_temporal: TemporalDevServer, server_factory, tmp_path: Path
) -> None:
    """A busy replica that does not pick up its own `llm_call` in time: the attempt
    moves to the shared queue and may run headless on the other replica while this
    one holds the client's stream. This one's writes (task_complete, the stream's
    end) then meet a task the other replica wrote: they must land, not fail it.
    A schedule-to-start timeout of a millisecond makes the move happen every time."""
    records = tmp_path / "records"
    replica_a, replica_b = _replicas(
        server_factory, no_eager_temporal, tmp_path, records, TEMPORAL_SCHEDULE_TO_START_TIMEOUT="0.001"
    )
    client = await make_client(replica_a.url, streaming=False)

    async def send(message) -> object:
        responses = [r async for r in client.send_message(SendMessageRequest(message=message))]
        return responses[-1].task

    # Which replica takes a moved attempt is Temporal's choice: batches of 10 until
    # one ran on B (each batch must be right whoever ran it), at most 4.
    ran_on_b = 0
    try:
        for batch in range(4):
            labels = [f"h{batch}.{i}-" for i in range(10)]
            messages = [scripted_message(chunks=CHUNKS, delay=DELAY, label=label) for label in labels]
            tasks = await asyncio.wait_for(asyncio.gather(*(send(m) for m in messages)), 120)
            for label, task in zip(labels, tasks, strict=True):
                expected = "".join(f"{label}{n} " for n in range(CHUNKS))
                assert task.status.state == TaskState.TASK_STATE_COMPLETED, (label, task)
                assert task_text(task) == expected, (label, task_text(task))
                starts = [r for r in read_records(records, task.id) if r["event"] == "start"]
                assert len(starts) == 1, (label, read_records(records, task.id))
                assert replica_b.proc is not None
                ran_on_b += starts[0]["pid"] == replica_b.proc.pid
            if ran_on_b:
                break
        assert ran_on_b, "no attempt ran on the other replica in 40 tasks: the test proved nothing"
    finally:
        await client.close()
    for replica in (replica_a, replica_b):
        log = replica.log()
        assert " ERROR " not in log and "Traceback" not in log, log[-4000:]


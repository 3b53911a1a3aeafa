"""Bad days in durable mode, for real: the server SIGKILLed with many tasks in flight, the
Temporal dev server killed and restarted under running tasks.

Where each task was when the kill landed is read from its workflow history, cut at
the moment of the kill (event times): the local-activity markers of task_receive and
task_complete, and the llm_call activity's scheduled / completed events. Whatever the
stage, every task must end completed with one execution's text.

Figures go to the JSON file of tests/support/figures.py (and are printed).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import ListTasksRequest, TaskState
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import make_client, stream_events, task_text, wait_terminal
from tests.support.durable import durable_env, readyz, scripted_message
from tests.support.figures import record
from tests.support.temporal import TemporalDevServer

pytestmark = [pytest.mark.temporal, pytest.mark.slow]

STAGES = ("before workflow start", "task_receive", "llm_call", "task_complete", "finished")


def expected_text(chunks: int) -> str:
    return "".join(f"c{i} " for i in range(chunks))


def figures_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "reliability-figures.json"


async def stream_one(client, message, sink: dict[str, Any]) -> None:
    """Stream a task, keeping its id and events; the server may die under us."""
    sink["events"] = []
    try:
        async for event in stream_events(client, message):
            if event.WhichOneof("payload") == "task":
                sink["id"] = event.task.id
            sink["events"].append(event)
    except Exception as exc:
        sink["error"] = type(exc).__name__


async def all_task_ids(client) -> list[str]:
    ids: list[str] = []
    token = ""
    for _ in range(100):
        page = await client.list_tasks(ListTasksRequest(page_size=100, page_token=token))
        ids += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    return ids


def stage_at(history, kill_wall: float) -> str:
    """Where a workflow was at wall-clock time `kill_wall`, from the events recorded before it."""
    seen: set[str] = set()
    for event in history.events:
        at = event.event_time.ToNanoseconds() / 1e9
        if at >= kill_wall:
            break
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            seen.add("started")
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            details = event.marker_recorded_event_attributes.details
            if "data" in details:
                data = json.loads(details["data"].payloads[0].data)
                seen.add(data.get("activity_type") or data.get("activityType") or "")
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            seen.add("llm_call done")
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            seen.add("finished")
    if "finished" in seen:
        return "finished"
    if "started" not in seen:
        return "before workflow start"
    if "task_receive" not in seen:
        return "task_receive"
    if "llm_call done" not in seen:
        return "llm_call"
    return "task_complete"


async def history_or_none(tclient: Client, workflow_id: str):
    try:
        return await tclient.get_workflow_handle(workflow_id).fetch_history()
    except RPCError:
        return None


def check_one_execution(records: Path, task_id: str, stage: str, kill_wall: float, chunks: int) -> dict:
    """The adapter ran to completion exactly once after the kill, or not at all when it
    had already completed before it (its result then came from history)."""
    recs = read_records(records, task_id)
    done = [r for r in recs if r["event"] == "done"]
    done_before = [r for r in done if r["t"] < kill_wall]
    done_after = [r for r in done if r["t"] >= kill_wall]
    assert len(done) >= 1, (task_id, stage, recs)
    if stage in {"task_complete", "finished"}:
        # llm_call's completion was in history: the adapter is never run again.
        assert done_after == [], (task_id, stage, recs)
        assert len(done_before) == 1, (task_id, stage, recs)
    else:
        # At most one complete run before the kill (its completion lost with the
        # process: Temporal retries that attempt), exactly one run that counted.
        assert len(done_before) <= 1 and len(done_after) <= 1, (task_id, stage, recs)
    return {"starts": sum(r["event"] == "start" for r in recs), "done": len(done), "lost_completion": len(done_before) == 1 and len(done_after) == 1}


async def test_sigkill_with_20_streaming_tasks_mid_llm_call(
    temporal_server, server_factory, tmp_path, tmp_path_factory
) -> None:
    records = tmp_path / "records"
    # Long enough that no task can finish before all 20 are mid-stream, even under load.
    chunks = 80
    env = durable_env(temporal_server.address, records)
    workdir = tmp_path / "crash20"
    server = server_factory(env, workdir=workdir)
    client = await make_client(server.url)
    sinks: list[dict[str, Any]] = [{} for _ in range(20)]
    streams = [
        asyncio.create_task(stream_one(client, scripted_message(chunks=chunks, delay=0.1), s))
        for s in sinks
    ]
    # Kill once every task has streamed at least 3 chunks: all 20 are inside llm_call.
    deadline = time.monotonic() + 60
    while not all(
        sum(e.WhichOneof("payload") == "artifact_update" for e in s.get("events", [])) >= 3
        for s in sinks
    ):
        assert time.monotonic() < deadline, [len(s.get("events", [])) for s in sinks]
        await asyncio.sleep(0.02)
    server.kill()
    kill_wall = time.time()
    killed = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*streams), 20)
    ids = [s["id"] for s in sinks]
    assert len(set(ids)) == 20

    restarted = server_factory(env, workdir=workdir, port=server.port)
    client2 = await make_client(restarted.url)
    tasks = await asyncio.gather(*(wait_terminal(client2, i, timeout=90) for i in ids))
    recovered_s = time.monotonic() - killed
    tclient = await Client.connect(temporal_server.address)
    stages: Counter[str] = Counter()
    lost = 0
    for task in tasks:
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task_text(task) == expected_text(chunks), task_text(task)  # no duplicated text
        history = await tclient.get_workflow_handle(f"molecule:{env['WORKSPACE_ID']}:{task.id}").fetch_history()
        stage = stage_at(history, kill_wall)
        stages[stage] += 1
        lost += check_one_execution(records, task.id, stage, kill_wall, chunks)["lost_completion"]
    assert stages == {"llm_call": 20}, stages
    assert (await readyz(restarted.url)).json()["temporal"]["live_tasks"] == 0
    record(
        figures_path(tmp_path_factory),
        "sigkill_20_mid_llm_call",
        {
            "tasks": 20,
            "completed": sum(t.status.state == TaskState.TASK_STATE_COMPLETED for t in tasks),
            "duplicated_text": 0,
            "stages_at_kill": dict(stages),
            "kill_to_all_completed_s": round(recovered_s, 2),
            "heartbeat_timeout_s": float(env["TEMPORAL_HEARTBEAT_TIMEOUT"]),
            "adapter_runs_with_lost_completion": lost,
        },
    )
    await client.close()
    await client2.close()


ROUNDS = 3
# Where a kill lands is chance; extra rounds (up to this many in all) run until it
# has landed in every stage at least once.
MAX_ROUNDS = 8
BATCH = 40


async def test_sigkill_at_random_offsets_lands_in_every_stage(
    temporal_server, server_factory, tmp_path, tmp_path_factory
) -> None:
    """Short tasks started in a stream, the server killed at a random moment of it, at least
    three times: kills land in task_receive, llm_call and task_complete; all tasks complete once."""
    rng = random.Random(20261122)
    chunks = 3
    records = tmp_path / "records"
    env = durable_env(temporal_server.address, records)
    workdir = tmp_path / "random-kill"
    tclient = await Client.connect(temporal_server.address)
    stages: Counter[str] = Counter()
    per_round: list[dict[str, Any]] = []
    offsets: list[float] = []
    lost = 0
    not_accepted = 0
    lost_answers: list[dict[str, str]] = []
    store_stuck: list[dict[str, str]] = []
    port = None
    for round_no in range(MAX_ROUNDS):
        if round_no >= ROUNDS and all(stages[s] for s in ("task_receive", "llm_call", "task_complete")):
            break
        server = server_factory(env, workdir=workdir, **({"port": port} if port else {}))
        port = server.port
        client = await make_client(server.url)
        before = set(await all_task_ids(client))
        sinks: list[dict[str, Any]] = [{} for _ in range(BATCH)]
        streams = []
        offset = rng.uniform(0.3, 1.5)
        offsets.append(round(offset, 3))
        started = time.monotonic()
        for sink in sinks:
            # A steady arrival of short tasks: at any instant some are in each stage.
            streams.append(
                asyncio.create_task(stream_one(client, scripted_message(chunks=chunks, delay=0.05), sink))
            )
            if time.monotonic() - started >= offset:
                break
            await asyncio.sleep(0.04)
        # Anywhere in the youngest task's first 40 ms, where its task_receive runs.
        await asyncio.sleep(rng.uniform(0.0, 0.04))
        server.kill()
        kill_wall = time.time()
        await asyncio.wait_for(asyncio.gather(*streams), 20)
        await client.close()

        restarted = server_factory(env, workdir=workdir, port=port)
        client = await make_client(restarted.url)
        ids = [i for i in await all_task_ids(client) if i not in before]
        # Tasks the client sent but the store never recorded died before being accepted.
        not_accepted += len(streams) - len(ids)
        round_stages: Counter[str] = Counter()
        staged: dict[str, str] = {}
        for task_id in ids:
            history = await history_or_none(tclient, f"molecule:{env['WORKSPACE_ID']}:{task_id}")
            staged[task_id] = "before workflow start" if history is None else stage_at(history, kill_wall)
            round_stages[staged[task_id]] += 1

        async def settle(task_id: str, stage: str, client=client, kill_wall=kill_wall) -> None:
            # A workflow that finished before the kill has nothing left to recover.
            timeout = 10 if stage == "finished" else 60
            try:
                task = await wait_terminal(client, task_id, timeout=timeout)
            except TimeoutError:
                store_stuck.append({"task": task_id, "stage": stage})
                return
            assert task.status.state == TaskState.TASK_STATE_COMPLETED, (stage, task)
            nonlocal lost
            lost += check_one_execution(records, task_id, stage, kill_wall, chunks)["lost_completion"]
            if task_text(task) != expected_text(chunks):
                lost_answers.append({"task": task_id, "stored_text": task_text(task), "stage": stage})

        # Tasks stored before their workflow started are started by the
        # restarted process's start-up sweep, so every stored task completes.
        await asyncio.gather(*(settle(i, st) for i, st in staged.items()))
        stages.update(round_stages)
        per_round.append({"kill_after_s": round(offset, 3), "sent": len(streams), "stages": dict(round_stages)})
        assert (await readyz(restarted.url)).json()["temporal"]["live_tasks"] == 0
        await client.close()
        restarted.stop()

    record(
        figures_path(tmp_path_factory),
        "sigkill_random_offsets",
        {
            "rounds": len(per_round),
            "tasks_sent": sum(r["sent"] for r in per_round),
            "not_accepted_before_kill": not_accepted,
            "stages_at_kill": {s: stages.get(s, 0) for s in STAGES},
            "per_round": per_round,
            "adapter_runs_with_lost_completion": lost,
            "completed_with_answer_lost": len(lost_answers),
            "store_never_terminal": len(store_stuck),
            "lost_or_stuck_by_stage": dict(Counter(x["stage"] for x in lost_answers + store_stuck)),
        },
    )
    for stage in ("task_receive", "llm_call", "task_complete"):
        assert stages[stage] > 0, f"no kill landed in {stage}: {dict(stages)}"
    # Stages report done to Temporal only once their events are stored, so no
    # answer or final state is lost whatever the moment of the kill.
    assert not lost_answers and not store_stuck, lost_answers + store_stuck


async def test_temporal_killed_and_restarted_under_many_tasks(
    server_factory, tmp_path, tmp_path_factory
) -> None:
    """SIGKILL of the Temporal dev server while 12 tasks stream; it comes back after 3 s.
    No task runs directly, none runs twice beyond Temporal retries; all complete."""
    records = tmp_path / "records"
    temporal = TemporalDevServer(tmp_path / "temporal").start()
    env = durable_env(temporal.address, records, TEMPORAL_RECONNECT_MAX_INTERVAL="1")
    server = server_factory(env)
    client = await make_client(server.url)
    chunks = 15
    sinks: list[dict[str, Any]] = [{} for _ in range(12)]
    streams = [
        asyncio.create_task(stream_one(client, scripted_message(chunks=chunks, delay=0.2), s))
        for s in sinks
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(
            any(e.WhichOneof("payload") == "artifact_update" for e in s.get("events", []))
            for s in sinks
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        temporal.kill()
        killed_wall = time.time()
        killed = time.monotonic()
        # While it is down, new tasks run directly, decided before they start.
        deadline = time.monotonic() + 20
        while (await readyz(server.url)).json()["mode"] != "direct-fallback":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        direct_sinks: list[dict[str, Any]] = [{} for _ in range(5)]
        await asyncio.gather(
            *(stream_one(client, scripted_message(chunks=2), s) for s in direct_sinks)
        )
        await asyncio.sleep(max(0.0, 3 - (time.monotonic() - killed)))
        temporal = TemporalDevServer(tmp_path / "temporal", port=temporal.port).start()
        back = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*streams), 120)
        finished = time.monotonic()
        ids = [s["id"] for s in sinks]
        tasks = await asyncio.gather(*(wait_terminal(client, i, timeout=60) for i in ids))
        retries = 0
        for task in tasks:
            assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
            assert task_text(task) == expected_text(chunks)
            assert task.metadata["molecule.mode"] == "durable"
            recs = read_records(records, task.id)
            starts = [r for r in recs if r["event"] == "start"]
            # Attempt 1 started before the outage; anything after is a Temporal retry
            # (attempt >= 2), never a direct re-run (which would be attempt 1 again).
            assert [r["attempt"] for r in starts if r["attempt"] == 1] == [1]
            assert all(r["attempt"] >= 2 for r in starts if r["t"] > killed_wall)
            retries += len(starts) - 1
            # Only retries whose earlier attempt never completed: one "done" in all.
            done = [r for r in recs if r["event"] == "done"]
            assert len(done) <= 1 + (len(starts) - 1), recs
        direct = [await wait_terminal(client, s["id"]) for s in direct_sinks]
        assert all(t.metadata["molecule.mode"] == "direct" for t in direct)
        assert all(t.status.state == TaskState.TASK_STATE_COMPLETED for t in direct)
        deadline = time.monotonic() + 20
        while (await readyz(server.url)).json()["mode"] != "durable":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert (await readyz(server.url)).json()["temporal"]["live_tasks"] == 0
        record(
            figures_path(tmp_path_factory),
            "temporal_killed_under_12_tasks",
            {
                "tasks": 12,
                "completed": len(tasks),
                "outage_s": round(back - killed, 2),
                "temporal_back_to_all_finished_s": round(finished - back, 2),
                "llm_call_retries": retries,
                "direct_reruns": 0,
                "tasks_sent_during_outage_ran_direct": len(direct),
            },
        )
    finally:
        for s in streams:
            s.cancel()
        await client.close()
        temporal.stop()


async def test_temporal_absent_then_present_with_many_tasks(
    server_factory, tmp_path, tmp_path_factory
) -> None:
    from tests.support.procs import free_port

    records = tmp_path / "records"
    port = free_port()
    env = durable_env(f"127.0.0.1:{port}", records, TEMPORAL_RECONNECT_MAX_INTERVAL="1")
    server = server_factory(env)
    client = await make_client(server.url)
    assert (await readyz(server.url)).json()["mode"] == "direct-fallback"
    first: list[dict[str, Any]] = [{} for _ in range(10)]
    await asyncio.gather(*(stream_one(client, scripted_message(chunks=3), s) for s in first))
    temporal = TemporalDevServer(tmp_path / "late", port=port).start()
    try:
        appeared = time.monotonic()
        while (await readyz(server.url)).json()["mode"] != "durable":
            assert time.monotonic() < appeared + 20
            await asyncio.sleep(0.1)
        switch_s = time.monotonic() - appeared
        second: list[dict[str, Any]] = [{} for _ in range(10)]
        await asyncio.gather(*(stream_one(client, scripted_message(chunks=3), s) for s in second))
        modes: Counter[str] = Counter()
        for batch, mode in ((first, "direct"), (second, "durable")):
            for sink in batch:
                task = await wait_terminal(client, sink["id"])
                assert task.status.state == TaskState.TASK_STATE_COMPLETED
                assert task.metadata["molecule.mode"] == mode
                assert len([r for r in read_records(records, task.id) if r["event"] == "start"]) == 1
                modes[mode] += 1
        record(
            figures_path(tmp_path_factory),
            "temporal_absent_then_present",
            {"direct_tasks": modes["direct"], "durable_tasks": modes["durable"], "switch_back_s": round(switch_s, 2)},
        )
    finally:
        await client.close()
        temporal.stop()

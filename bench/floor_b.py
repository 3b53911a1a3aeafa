"""Floor B: start→result of a no-op three-activity workflow, worker in the same process.

Run as `python -m bench.floor_b <temporal address> <n> <concurrency> <rss k>`; prints one
JSON object: {"same_shape": [seconds...], "regular": [seconds...], ...}. Also measured,
for the analysis: the same shape with the workflow sandbox off, and the RSS per workflow
parked in its activity, sandboxed and not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.workflows import FloorInput, FloorRegular, FloorSameShape


@activity.defn(name="b_receive")
async def b_receive() -> None:
    return None


HOLD: list[asyncio.Event] = []  # when set up, b_llm parks until released (RSS figures)
STARTED = [0]


@activity.defn(name="b_llm")
async def b_llm() -> None:
    activity.heartbeat()
    if HOLD:
        STARTED[0] += 1
        await HOLD[0].wait()


@activity.defn(name="b_complete")
async def b_complete() -> None:
    return None


async def _timed(client: Client, workflow: str, queue: str, inp: FloorInput, eager: bool) -> float:
    start = time.perf_counter()
    handle = await client.start_workflow(
        workflow,
        inp,
        id=f"bench-{uuid.uuid4().hex}",
        task_queue=queue,
        request_eager_start=eager,
    )
    await handle.result()
    return time.perf_counter() - start


def _workers(client: Client, queue: str, sandboxed: bool) -> list[Worker]:
    common: dict[str, Any] = {
        "max_heartbeat_throttle_interval": timedelta(seconds=0.5),
        "default_heartbeat_throttle_interval": timedelta(seconds=0.5),
        "max_concurrent_activities": 1000,
    }
    runner: dict[str, Any] = {} if sandboxed else {"workflow_runner": UnsandboxedWorkflowRunner()}
    return [
        Worker(
            client,
            task_queue=queue,
            workflows=[FloorSameShape, FloorRegular],
            activities=[b_receive, b_llm, b_complete],
            max_concurrent_local_activities=1000,
            **runner,
            **common,
        ),
        Worker(client, task_queue=f"{queue}@proc", activities=[b_llm], **common),
    ]


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _rss_per_workflow(client: Client, queue: str, k: int) -> float:
    """KiB of this process's RSS per workflow parked in its llm activity."""
    inp = FloorInput(process_queue=f"{queue}@proc")
    HOLD.append(asyncio.Event())
    STARTED[0] = 0
    base = _rss_kib()
    runs = [asyncio.create_task(_timed(client, "BenchFloorSameShape", queue, inp, True)) for _ in range(k)]
    for _ in range(1200):  # at most 120 s
        if STARTED[0] >= k:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    peak = _rss_kib()
    parked = STARTED[0]
    HOLD[0].set()
    HOLD.clear()
    await asyncio.wait_for(asyncio.gather(*runs), 120)
    return (peak - base) / max(1, parked)


async def main(address: str, n: int, concurrency: int, rss_k: int) -> dict[str, object]:
    client = await Client.connect(address)
    # Ours passes TracingInterceptor to its client (and so to its workers): measured separately.
    traced_client = await Client.connect(address, interceptors=[TracingInterceptor()])
    queue = f"bench-b-{uuid.uuid4().hex[:8]}"
    plain_queue = f"{queue}-unsandboxed"
    traced_queue = f"{queue}-otel"
    workers = [*_workers(client, queue, True), *_workers(client, plain_queue, False),
               *_workers(traced_client, traced_queue, True)]
    out: dict[str, object] = {}
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        inp = FloorInput(process_queue=f"{queue}@proc")
        plain = FloorInput(process_queue=f"{plain_queue}@proc")
        traced = FloorInput(process_queue=f"{traced_queue}@proc")
        for _ in range(3):  # warm-up: sandbox, sticky cache, connections
            await _timed(client, "BenchFloorSameShape", queue, inp, True)
            await _timed(client, "BenchFloorRegular", queue, inp, False)
            await _timed(client, "BenchFloorSameShape", plain_queue, plain, True)
            await _timed(traced_client, "BenchFloorSameShape", traced_queue, traced, True)
        with_otel: list[float] = []
        same: list[float] = []
        regular: list[float] = []
        unsandboxed: list[float] = []
        for _ in range(n):  # interleaved, so drift in machine load hits all alike
            same.append(await _timed(client, "BenchFloorSameShape", queue, inp, True))
            regular.append(await _timed(client, "BenchFloorRegular", queue, inp, False))
            unsandboxed.append(await _timed(client, "BenchFloorSameShape", plain_queue, plain, True))
            with_otel.append(await _timed(traced_client, "BenchFloorSameShape", traced_queue, traced, True))
        out["same_shape"] = same
        out["regular"] = regular
        out["same_shape_unsandboxed"] = unsandboxed
        out["same_shape_tracing_interceptor"] = with_otel
        start = time.perf_counter()
        await asyncio.gather(
            *(_timed(client, "BenchFloorSameShape", queue, inp, True) for _ in range(concurrency))
        )
        out["same_shape_concurrent_wall"] = time.perf_counter() - start
        out["concurrency"] = concurrency
        if rss_k:
            # Not used by bench.run: a burst after another one in the same process reuses the
            # memory the first freed, so these figures read low (see bench.memprobe instead).
            out["rss_k"] = rss_k
            await _rss_per_workflow(client, queue, rss_k)  # warm-up, discarded: heap growth
            out["kib_per_workflow_unsandboxed"] = await _rss_per_workflow(client, plain_queue, rss_k)
            out["kib_per_workflow_sandboxed"] = await _rss_per_workflow(client, queue, rss_k)
    return out


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    print(json.dumps(result), flush=True)

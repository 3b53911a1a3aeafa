"""Floor B: start→result of a no-op three-activity workflow, worker in the same process.

Run as `python -m bench.floor_b <temporal address> <n> <concurrency>`; prints one
JSON object: {"same_shape": [seconds...], "regular": [seconds...], ...}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from bench.workflows import FloorInput, FloorRegular, FloorSameShape


@activity.defn(name="b_receive")
async def b_receive() -> None:
    return None


@activity.defn(name="b_llm")
async def b_llm() -> None:
    activity.heartbeat()


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


async def main(address: str, n: int, concurrency: int) -> dict[str, object]:
    client = await Client.connect(address)
    queue = f"bench-b-{uuid.uuid4().hex[:8]}"
    process_queue = f"{queue}@proc"
    common: dict[str, object] = {
        "max_heartbeat_throttle_interval": timedelta(seconds=0.5),
        "default_heartbeat_throttle_interval": timedelta(seconds=0.5),
        "max_concurrent_activities": 1000,
    }
    workers = [
        Worker(
            client,
            task_queue=queue,
            workflows=[FloorSameShape, FloorRegular],
            activities=[b_receive, b_llm, b_complete],
            max_concurrent_local_activities=1000,
            **common,  # type: ignore[arg-type]
        ),
        Worker(client, task_queue=process_queue, activities=[b_llm], **common),  # type: ignore[arg-type]
    ]
    out: dict[str, object] = {}
    async with workers[0], workers[1]:
        inp = FloorInput(process_queue=process_queue)
        for _ in range(3):  # warm-up: sandbox, sticky cache, connections
            await _timed(client, "BenchFloorSameShape", queue, inp, True)
            await _timed(client, "BenchFloorRegular", queue, inp, False)
        same: list[float] = []
        regular: list[float] = []
        for _ in range(n):  # interleaved, so drift in machine load hits both alike
            same.append(await _timed(client, "BenchFloorSameShape", queue, inp, True))
            regular.append(await _timed(client, "BenchFloorRegular", queue, inp, False))
        out["same_shape"] = same
        out["regular"] = regular
        start = time.perf_counter()
        await asyncio.gather(
            *(_timed(client, "BenchFloorSameShape", queue, inp, True) for _ in range(concurrency))
        )
        out["same_shape_concurrent_wall"] = time.perf_counter() - start
        out["concurrency"] = concurrency
    return out


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    print(json.dumps(result), flush=True)

"""Durable floor of the streaming benchmark: Temporal alone, no A2A, no task store.

    python -m bench.temporal_floor <temporal address> <temporal pid> <n> <chunks> <delay>

N workflows of the runtime's shape (`bench.workflows.FloorSameShape`: a local
receive, a regular activity on this process's own queue, a local complete)
started at once with eager start, client and worker on one event loop as in the
runtime. The activity "generates" like `bench/streaming_adapter.py` (`chunks`
steps on an absolute schedule `delay` apart) and heartbeats once a second, as
the runtime's `llm_call` does, and nothing else: no HTTP, no events, no store.
So this is what Temporal's orchestration of the burst costs on this machine, the
lower bound of the durable scenarios. Prints one JSON object: wall, the time each
activity took its first step, CPU of this process and of the Temporal server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

from bench.measure import pct
from bench.streaming import cpu_s
from bench.workflows import FloorInput, FloorSameShape

# The runtime's llm_call heartbeats this often (molecule_runtime/durable/process.py).
HEARTBEAT_S = 1.0
# The runtime's worker settings (molecule_runtime/durable/worker.py).
POLLS = 20
THROTTLE = timedelta(seconds=0.1)
WARM_UP = 3


class Generation:
    def __init__(self, chunks: int, delay: float) -> None:
        self.chunks = chunks
        self.delay = delay
        self.first_step: list[float] = []  # loop time of each activity's first chunk

    @activity.defn(name="b_receive")
    async def receive(self) -> None:
        return None

    @activity.defn(name="b_llm")
    async def llm(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_beat = start
        for seq in range(self.chunks):
            if loop.time() >= next_beat:
                activity.heartbeat()
                next_beat += HEARTBEAT_S
            await asyncio.sleep(max(0.0, start + (seq + 1) * self.delay - loop.time()))
            if seq == 0:
                self.first_step.append(loop.time())

    @activity.defn(name="b_complete")
    async def complete(self) -> None:
        return None


async def main(address: str, temporal_pid: int, n: int, chunks: int, delay: float) -> dict[str, Any]:
    client = await Client.connect(address)
    queue = f"bench-tf-{uuid.uuid4().hex[:8]}"
    inp = FloorInput(process_queue=f"{queue}@proc")
    gen = Generation(chunks, delay)
    common: dict[str, Any] = {
        "max_heartbeat_throttle_interval": THROTTLE,
        "default_heartbeat_throttle_interval": THROTTLE,
        "max_concurrent_activities": 1000,
        "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(POLLS),
        "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(POLLS),
    }
    activities = [gen.receive, gen.llm, gen.complete]

    async def one() -> bool:
        handle = await client.start_workflow(
            FloorSameShape.run, inp, id=f"bench-tf-{uuid.uuid4().hex}", task_queue=queue,
            request_eager_start=True,
        )
        return await handle.result() == "ok"

    async with (
        Worker(client, task_queue=queue, workflows=[FloorSameShape], activities=activities,
               workflow_runner=UnsandboxedWorkflowRunner(), max_concurrent_local_activities=1000,
               sticky_queue_schedule_to_start_timeout=timedelta(seconds=1), **common),
        Worker(client, task_queue=inp.process_queue, activities=[gen.llm], **common),
    ):
        for _ in range(WARM_UP):
            await one()
        gen.first_step.clear()
        loop = asyncio.get_running_loop()
        me = os.getpid()
        cpu_before = {"server": cpu_s(me), "temporal": cpu_s(temporal_pid)}
        t0 = loop.time()
        outcomes = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        wall = loop.time() - t0
        cpu = {"server": cpu_s(me) - cpu_before["server"],
               "temporal": cpu_s(temporal_pid) - cpu_before["temporal"]}
    firsts = [t - t0 for t in gen.first_step]
    errors = sorted({f"{type(o).__name__}: {o}"[:300] for o in outcomes if isinstance(o, BaseException)})
    generation = chunks * delay
    return {
        "n": n, "chunks": chunks, "delay": delay, "generation_s": generation,
        "wall_s": wall, "wall_over_generation": wall / generation,
        "completed": sum(1 for o in outcomes if o is True), "errors": errors[:5],
        "first_chunk_p50_s": pct(firsts, 50), "first_chunk_max_s": max(firsts, default=float("nan")),
        "cpu_s": cpu,
    }


if __name__ == "__main__":
    address, temporal_pid, n, chunks, delay = sys.argv[1:6]
    out = asyncio.run(main(address, int(temporal_pid), int(n), int(chunks), float(delay)))
    print(json.dumps(out), flush=True)
    # The SDK can abort at interpreter exit (temporal-facts.md): the figures are out, leave now.
    sys.stdout.flush()
    os._exit(0)

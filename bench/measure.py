"""Measurements against a running server (all over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.client import Conn, HttpError, StreamTiming, message_params, send_task, stream_task
from bench.procs import Proc

COMPLETED = "TASK_STATE_COMPLETED"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[rank - 1]


def expected_text(chunks: int) -> str:
    return "".join(f"c{i} " for i in range(chunks))


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95),
            "mean": statistics.fmean(values) if values else float("nan")}


@dataclass
class Samples:
    """Raw samples of one system, accumulated over rounds."""

    send: list[float] = field(default_factory=list)  # SendMessage latency, sequential
    first_event: list[float] = field(default_factory=list)  # SSE, sequential
    first_chunk: list[float] = field(default_factory=list)
    stream_end: list[float] = field(default_factory=list)
    tput_done: int = 0
    tput_seconds: float = 0.0
    tput_latency: list[float] = field(default_factory=list)
    failures: int = 0
    task_ids: list[str] = field(default_factory=list)


async def interleaved(ports: dict[str, int], n: int, chunks: int, samples: dict[str, Samples],
                      stream: bool) -> None:
    """Sequential requests, one per system in turn, so drifting machine load hits all alike."""
    conns = {name: Conn(port) for name, port in ports.items()}
    try:
        for i in range(n):
            names = list(conns)
            names = names[i % len(names):] + names[: i % len(names)]
            for name in names:
                s = samples[name]
                if stream:
                    t = await stream_task(conns[name], message_params(chunks=chunks))
                    if t.state != COMPLETED or t.text != expected_text(chunks):
                        s.failures += 1
                    s.first_event.append(t.first_event)
                    s.first_chunk.append(t.first_chunk)
                    s.stream_end.append(t.end)
                    s.task_ids.append(t.task_id)
                else:
                    elapsed, state = await send_task(conns[name], message_params(chunks=chunks))
                    if state != COMPLETED:
                        s.failures += 1
                    s.send.append(elapsed)
    finally:
        await asyncio.gather(*(c.close() for c in conns.values()))


async def throughput(port: int, concurrency: int, seconds: float, chunks: int, s: Samples) -> None:
    """Closed loop: `concurrency` clients send SendMessage back to back for `seconds`."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        conn = Conn(port)
        try:
            while time.perf_counter() < deadline:
                elapsed, state = await send_task(conn, message_params(chunks=chunks))
                if state == COMPLETED:
                    done += 1
                    s.tput_latency.append(elapsed)
                else:
                    s.failures += 1
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(concurrency))), seconds + 60)
    s.tput_done += done
    s.tput_seconds += time.perf_counter() - start


SETTLE_S = 0.5


async def concurrency_ratio(
    port: int, k: int, chunks: int, trials: int, delay: float = 0.0
) -> dict[str, float]:
    """Wall time of k concurrent SendMessage over the wall time of one (medians of trials).

    `delay` makes the adapter wait before each chunk, as a model API would.
    """
    script = {"chunks": chunks, **({"delay": delay} if delay else {})}
    conns = [Conn(port) for _ in range(k)]
    singles: list[float] = []
    groups: list[float] = []
    try:
        for _ in range(trials):
            # The baseline is one task on an idle server: the last group's tasks are
            # answered before their write-behind and push checks are done.
            await asyncio.sleep(SETTLE_S)
            elapsed, _ = await send_task(conns[0], message_params(**script))
            singles.append(elapsed)
            start = time.perf_counter()
            await asyncio.gather(*(send_task(c, message_params(**script)) for c in conns))
            groups.append(time.perf_counter() - start)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    one, many = statistics.median(singles), statistics.median(groups)
    return {"k": k, "one_s": one, "k_wall_s": many, "ratio": many / one}


async def rss_in_flight(server: Proc, k: int, hold: float, timeout: float) -> dict[str, Any]:
    """RSS of the server with k tasks in flight (each parked after its first chunk)."""
    await asyncio.sleep(0.5)
    base = server.rss_kib()
    conns = [Conn(server.port) for _ in range(k)]
    in_flight = 0
    all_in = asyncio.Event()

    def first_chunk(_: StreamTiming) -> None:
        nonlocal in_flight
        in_flight += 1
        if in_flight == k:
            all_in.set()

    start = time.perf_counter()
    tasks = [
        asyncio.create_task(stream_task(c, message_params(chunks=2, hold=hold), on_first_chunk=first_chunk))
        for c in conns
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), timeout)
    ramp = time.perf_counter() - start
    await asyncio.sleep(0.3)  # let allocations settle (heartbeats, buffers)
    peak = server.rss_kib()
    reached = in_flight
    server.signal(signal.SIGUSR1)  # release every held task
    done, pending = await asyncio.wait(tasks, timeout=max(30.0, k / 10))
    for t in pending:
        t.cancel()
    completed = sum(
        1 for t in done if not t.cancelled() and t.exception() is None and t.result().state == COMPLETED
    )
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return {
        "k": k,
        "in_flight": reached,
        "ramp_s": ramp,
        "rss_base_kib": base,
        "rss_peak_kib": peak,
        "kib_per_task": (peak - base) / max(1, reached),
        "completed": completed,
        "drain_s": time.perf_counter() - start - ramp,
    }


async def cancel_latency(server: Proc, data_dir: Path, trials: int) -> dict[str, Any]:
    """CancelTask sent → the adapter sees CancelledError (its own time.time() record)."""
    latencies: list[float] = []
    replies: list[float] = []
    for _ in range(trials):
        stream_conn, cancel_conn = Conn(server.port), Conn(server.port)
        got_chunk = asyncio.Event()
        timing_box: list[StreamTiming] = []

        def on_chunk(t: StreamTiming, box: list[StreamTiming] = timing_box,
                     ev: asyncio.Event = got_chunk) -> None:
            box.append(t)
            ev.set()

        streaming = asyncio.create_task(
            stream_task(stream_conn, message_params(chunks=3000, delay=0.01), on_first_chunk=on_chunk)
        )
        try:
            await asyncio.wait_for(got_chunk.wait(), 30)
            await asyncio.sleep(0.05)
            task_id = timing_box[0].task_id
            sent = time.time()
            await cancel_conn.call("CancelTask", {"id": task_id})
            replies.append(time.time() - sent)
            record = data_dir / f"cancelled-{task_id}"
            for _ in range(3000):  # at most 15 s
                if record.exists():
                    break
                await asyncio.sleep(0.005)
            if record.exists():
                await asyncio.sleep(0.01)
                latencies.append(float(record.read_text()) - sent)
            else:
                latencies.append(float("inf"))
            with contextlib.suppress(TimeoutError, HttpError, OSError):
                await asyncio.wait_for(streaming, 15)
        finally:
            if not streaming.done():
                streaming.cancel()
            await stream_conn.close()
            await cancel_conn.close()
    return {"trials": trials, "p50_s": pct(latencies, 50), "max_s": max(latencies),
            "samples_s": latencies, "reply_p50_s": pct(replies, 50)}

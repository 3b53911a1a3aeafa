"""The streaming benchmark's load client, a process of its own.

    python -m bench.stream_load '<json config>'

It runs in its own process so that the client's CPU is never counted against
the server's (the driver reads the server's /proc CPU counters) and the
driver's RSS sampling does not slow the client down. Handshake on stdin/stdout,
one line each, so the driver's CPU window covers the burst and nothing else:

    client → "ready"           (imported, nothing sent yet)
    driver → "go"              (CPU counters read)
    client → "burst-done"      (every stream ended or the timeout hit)
    driver → "verify"          (CPU counters read again)
    client → {result JSON}     (after GetTask of every task, when asked to)

Config: port, n, chunks, delay, timeout (seconds for the whole burst), verify
(GetTask every task afterwards: the runtime has it, the floor has not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.client import Conn, message_params
from bench.streaming_adapter import TOKEN_WIDTH, check_text

COMPLETED = "TASK_STATE_COMPLETED"


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list; nan when empty."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(1, math.ceil(q / 100 * len(sorted_values))) - 1]


def raise_fd_limit() -> None:
    # One socket per concurrent stream, plus the GetTask pool: 500 streams need
    # more than a 1024 soft limit would allow on some machines.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@dataclass
class Stream:
    task_id: str = ""
    state: str = ""
    error: str = ""
    done: bool = False  # the server ended the stream (not an error, not the timeout)
    events: int = 0  # SSE artifact events with text
    first_chunk_s: float = float("nan")  # since the burst started
    end_s: float = float("nan")
    artifacts: dict[str, str] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    first_yield: float = float("nan")  # embedded time.time() of chunk 0 / the last chunk
    last_yield: float = float("nan")

    @property
    def text(self) -> str:
        return "".join(self.artifacts.values())


async def one_stream(port: int, chunks: int, delay: float, t0: float, s: Stream) -> None:
    conn = Conn(port)

    def on_event(result: dict[str, Any]) -> None:
        now = time.time()
        if "task" in result:
            s.task_id = result["task"]["id"]
            s.state = result["task"]["status"]["state"]
        elif "artifactUpdate" in result:
            update = result["artifactUpdate"]
            art = update["artifact"]
            text = "".join(p.get("text", "") for p in art.get("parts", []))
            key = art.get("artifactId", "")
            before = s.artifacts.get(key, "")
            s.artifacts[key] = (before + text) if update.get("append") else text
            if not update.get("append") and before and text.startswith(before):
                # The closing update repeats the whole answer (for clients that
                # keep only the last event): only what it adds is new.
                text = text[len(before):]
            if not text:
                return
            s.events += 1
            if s.events == 1:
                s.first_chunk_s = time.perf_counter() - t0
            # The delay of a chunk: this event's receive time minus the time the
            # adapter yielded it (embedded in the token); several per event.
            for i in range(0, len(text) - TOKEN_WIDTH + 1, TOKEN_WIDTH):
                yielded = float(text[i + 7 : i + 24])
                s.delays.append(now - yielded)
                if text[i + 1 : i + 6] == "00000":
                    s.first_yield = yielded
                s.last_yield = yielded
        elif "statusUpdate" in result:
            s.state = result["statusUpdate"]["status"]["state"]

    try:
        await conn.stream("SendStreamingMessage", message_params(chunks=chunks, delay=delay), on_event)
        s.done = True
    except Exception as exc:  # counted and reported, never fatal to the burst
        s.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        s.end_s = time.perf_counter() - t0
        await conn.close()


async def verify(port: int, streams: list[Stream], chunks: int, timeout: float) -> dict[str, Any]:
    """GetTask for every task: the stored state and text must match what was streamed."""
    ok = 0
    parts: Counter[int] = Counter()
    states: Counter[str] = Counter()
    errors: list[str] = []
    queue: asyncio.Queue[Stream] = asyncio.Queue()
    for s in streams:
        if s.task_id:
            queue.put_nowait(s)

    async def worker() -> None:
        nonlocal ok
        conn = Conn(port)
        try:
            while not queue.empty():
                s = queue.get_nowait()
                try:
                    task = await conn.call("GetTask", {"id": s.task_id})
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                state = task["status"]["state"]
                states[state] += 1
                arts = task.get("artifacts") or []
                parts[sum(len(a.get("parts", [])) for a in arts)] += 1
                stored = "".join(p.get("text", "") for a in arts for p in a.get("parts", []))
                if state == COMPLETED and stored == s.text and check_text(stored, chunks) is None:
                    ok += 1
        finally:
            await conn.close()

    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(16))), timeout)
    except TimeoutError:
        errors.append(f"GetTask verification not finished within {timeout:g} s")
    return {"stored_exact": ok, "stored_states": dict(states), "stored_parts": dict(parts),
            "errors": errors[:5]}


async def burst(cfg: dict[str, Any]) -> dict[str, Any]:
    port, n, chunks, delay = cfg["port"], cfg["n"], cfg["chunks"], cfg["delay"]
    streams = [Stream() for _ in range(n)]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
        raise SystemExit("expected 'go'")
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one_stream(port, chunks, delay, t0, s)) for s in streams]
    _, pending = await asyncio.wait(tasks, timeout=cfg["timeout"])
    wall = time.perf_counter() - t0
    for t in pending:
        t.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)
    print("burst-done", flush=True)
    if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "verify":
        raise SystemExit("expected 'verify'")

    finished = [s for s in streams if s.done]
    exact = [s for s in finished if s.state == COMPLETED and check_text(s.text, chunks) is None]
    delays = sorted(d for s in streams for d in s.delays)
    spans = sorted(s.last_yield - s.first_yield for s in streams if not math.isnan(s.first_yield))
    first = sorted(s.first_chunk_s for s in streams if not math.isnan(s.first_chunk_s))
    bad = Counter(check_text(s.text, chunks) or "" for s in finished if s.state == COMPLETED)
    bad.pop("", None)
    result: dict[str, Any] = {
        "n": n,
        "chunks": chunks,
        "delay": delay,
        "wall_s": wall,
        "timed_out": len(pending),
        "finished": len(finished),
        "sse_exact": len(exact),
        "states": dict(Counter(s.state or "(none)" for s in streams)),
        "errors": sorted({s.error for s in streams if s.error})[:5],
        "text_problems": [f"{k} (x{v})" for k, v in bad.most_common(3)],
        "task_ids": [s.task_id for s in streams if s.task_id],
        "chunks_received": len(delays),
        "events": sum(s.events for s in streams),
        "delay_p50_s": pct(delays, 50),
        "delay_p99_s": pct(delays, 99),
        "delay_max_s": delays[-1] if delays else float("nan"),
        "first_chunk_p50_s": pct(first, 50),
        "first_chunk_max_s": first[-1] if first else float("nan"),
        # Adapter's first → last yield: (chunks-1) x delay unless its loop was starved.
        "yield_span_p50_s": pct(spans, 50),
        "yield_span_max_s": spans[-1] if spans else float("nan"),
    }
    if cfg.get("verify"):
        result |= await verify(port, streams, chunks, cfg.get("verify_timeout", 120.0))
    return result


def main() -> None:
    raise_fd_limit()
    cfg = json.loads(sys.argv[1])
    result = asyncio.run(burst(cfg))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

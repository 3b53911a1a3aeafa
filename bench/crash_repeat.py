"""Work repeated after a crash: what a retry generates, runs and takes back again.

    python -m bench.crash_repeat                  # both adapters x kill -9 / SIGTERM, one run each (~2 min)
    python -m bench.crash_repeat --runs 3 --event kill9 --adapter continuing

One durable task (SQLite store, one Temporal dev server for the whole run)
streams a 500-chunk answer, 20 ms apart, to a live client (raw SSE over
JSON-RPC `SendStreamingMessage`), with a side effect before every 50th chunk
(bench/crash_adapter.py). When the adapter has generated half of the answer:

- `kill9`: the server is killed (SIGKILL) and started again (same instance id
  and port); the client resumes with `SubscribeToTask` and `Last-Event-ID` on it;
- `sigterm`: a second replica is up; the first gets SIGTERM (a deploy, shutdown
  grace 2 s), the client resumes on the second, which finishes the task.

Per adapter kind: `plain` (today's adapter: no `continues_partial`, side effects
as plain calls) and `continuing` (`continues_partial = True`, side effects in
`step(...)`). Reported: chunks generated again (% of the answer), characters of
the answer taken back from the client (`append: false` before the closing
update) and characters it received twice, side effects repeated, time from the
signal to the task's completion on the resumed stream, whether the client's and
the stored answer are exact; also each chunk's delay (generated → received by
the live client, before the signal): what write-ahead streaming costs the
continuing adapter against the plain one. Targets (continuing): ≤ 5 %
regenerated, 0 side effects repeated, 0 characters taken back or received twice.

Writes bench/results/crash_repeat.json and its block of docs/performance.md
(between `<!-- crash_repeat:begin -->` and `<!-- crash_repeat:end -->`). Every
process is started here and stopped by PID / process group; all traffic stays
on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.crash_adapter import WIDTH, answer
from bench.procs import REPO, Proc
from bench.replicas import log_problems, replica
from bench.report import splice_block
from tests.support.sse import (
    A2A,
    get_task_json,
    sse_frames,
    state_of,
    stream_request,
    subscribe_request,
)
from tests.support.temporal import TemporalDevServer

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- crash_repeat:begin -->", "<!-- crash_repeat:end -->"
HEARTBEAT_TIMEOUT = 5
SHUTDOWN_GRACE = 1
TARGET_REGENERATED_PCT = 5.0
ADAPTERS = ("plain", "continuing")
EVENTS = ("kill9", "sigterm")

# (received at time.time(), SSE id, StreamResponse JSON)
Frame = tuple[float, int, dict[str, Any]]


class ClientView:
    """The answer as a client holds it, applying `append` update by update."""

    def __init__(self, answer_id: str) -> None:
        self.answer_id = answer_id
        self.text = ""
        self.started = False
        self.taken_back = 0  # characters dropped by an append:false before the closing update
        self.closing: str | None = None

    def apply(self, payload: dict[str, Any]) -> str:
        """Apply one frame; the text it appended."""
        update = payload.get("artifactUpdate")
        if update is None or update["artifact"]["artifactId"] != self.answer_id:
            return ""
        text = "".join(p.get("text", "") for p in update["artifact"].get("parts", []))
        started, self.started = self.started, True
        if update.get("append") or not started:
            self.text += text
            return text
        if update.get("lastChunk"):
            self.closing = text
            return ""
        self.taken_back += len(self.text)
        self.text = text
        return text


async def _stream(http: httpx.AsyncClient, request: tuple[str, str, Any], frames: list[Frame],
                  last_event_id: int | None = None, *, cut: bool = False) -> None:
    """Frames until the task ends; `cut`: the server goes away under this stream
    (its end, or an error frame at shutdown, is expected)."""
    method, target, body = request
    headers = dict(A2A)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    with contextlib.suppress(*((httpx.HTTPError, AssertionError) if cut else ())):
        async with http.stream(method, target, json=body, headers=headers) as response:
            async for event_id, payload in sse_frames(response):
                frames.append((time.time(), int(event_id) if event_id is not None else 0, payload))
                if state_of(payload) in ("TASK_STATE_COMPLETED", "TASK_STATE_FAILED"):
                    return


def read_record(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by SIGKILL
            out.append(json.loads(line))
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_case(root: Path, temporal: TemporalDevServer, adapter: str, event: str, run: int,
             chunks: int, delay: float, every: int) -> dict[str, Any]:
    work = root / f"{adapter}-{event}-{run}"
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    record = work / "record.jsonl"
    work.mkdir(parents=True)
    env = {
        "ADAPTER_MODULE": "bench.crash_adapter",
        "ADAPTER_OPTIONS": json.dumps({"continues": adapter == "continuing"}),
        "LOG_LEVEL": "INFO",
        "TASK_STORE_URL": f"sqlite+aiosqlite:///{work / 'tasks.db'}",
        "TEMPORAL_HOST": temporal.address,
        "TEMPORAL_TASK_QUEUE": queue,
        "WORKSPACE_ID": f"ws-{queue}",
        "TEMPORAL_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "TEMPORAL_SCHEDULE_TO_START_TIMEOUT": "5",
        "MOLECULE_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
    }
    procs: list[Proc] = []
    a = replica(work, "replica-a", env)
    procs.append(a)
    a.start()
    b: Proc | None = None
    if event == "sigterm":
        b = replica(work, "replica-b", env)
        procs.append(b)
        b.start()
    try:
        a.wait_ready()
        if b is not None:
            b.wait_ready()
        script = {"chunks": chunks, "delay": delay, "effect_every": every, "record": str(record)}

        async def drive() -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10)) as http:
                live: list[Frame] = []
                reader = asyncio.create_task(
                    _stream(http, stream_request("JSONRPC", f"http://127.0.0.1:{a.port}", "go", script), live, cut=True)
                )
                deadline = time.monotonic() + 120
                while sum(1 for r in read_record(record) if "chunk" in r) < chunks // 2:
                    if reader.done() or time.monotonic() > deadline:
                        raise RuntimeError(f"the task did not get half-way: {live[-2:]}\n{a.log()}")
                    await asyncio.sleep(0.005)
                signalled = time.monotonic()
                cut_at = time.time()
                if event == "kill9":
                    a.kill()
                else:
                    a.signal(signal.SIGTERM)
                await asyncio.wait_for(reader, 60)
                if event == "kill9":
                    again = replica(work, "replica-a", env, port=a.port)
                    again.name = "replica-a-restarted"
                    again.log_path = work / "replica-a" / f"replica-a-{a.port}-restarted.log"
                    procs.append(again)
                    again.start()
                    await asyncio.to_thread(again.wait_ready)
                    target = f"http://127.0.0.1:{again.port}"
                else:
                    assert b is not None
                    target = f"http://127.0.0.1:{b.port}"
                task_id = next(p["task"]["id"] for _, _, p in live if "task" in p)
                after: list[Frame] = []
                last_id = max((i for _, i, _ in live), default=0)
                await asyncio.wait_for(
                    _stream(http, subscribe_request("JSONRPC", target, task_id), after, last_id), 300
                )
                done = time.monotonic()
                stored = await get_task_json(http, target, task_id)
                return {"live": live, "after": after, "task_id": task_id, "cut_at": cut_at,
                        "signal_to_done_s": done - signalled, "stored": stored}

        seen = asyncio.run(drive())
    finally:
        for proc in procs:
            proc.stop()
    return measure(seen, read_record(record), adapter, event, run, chunks, every, procs)


def measure(seen: dict[str, Any], lines: list[dict[str, Any]], adapter: str, event: str, run: int,
            chunks: int, every: int, procs: list[Proc]) -> dict[str, Any]:
    whole = answer(chunks)
    view = ClientView(f"{seen['task_id']}-answer")
    # Chunk delay of the live stream before the signal: generated (adapter) -> received.
    generated_at = {r["chunk"]: r["at"] for r in lines if r.get("attempt") == 1 and "chunk" in r}
    delays = []
    for received, _, payload in seen["live"]:
        start = len(view.text)
        appended = view.apply(payload)
        if received > seen["cut_at"] or not appended:
            continue
        for offset in range(0, len(appended), WIDTH):
            index = (start + offset) // WIDTH
            if index in generated_at:
                delays.append(received - generated_at[index])
    seen_live = len(view.text)
    for _, _, payload in seen["after"]:
        view.apply(payload)
    generated = Counter(r["chunk"] for r in lines if "chunk" in r)
    effects = Counter(r["effect"] for r in lines if "effect" in r)
    tokens = [view.text[i : i + WIDTH] for i in range(0, len(view.text), WIDTH)]
    stored_text = "".join(p.get("text", "") for a in seen["stored"].get("artifacts", []) for p in a["parts"])
    attempts = sorted({r["attempt"] for r in lines})
    return {
        "adapter": adapter,
        "event": event,
        "run": run,
        "chunks": chunks,
        "attempts": attempts,
        "cut_after_chunks": max((r["chunk"] for r in lines if r.get("attempt") == 1 and "chunk" in r), default=-1) + 1,
        "seen_live_chars": seen_live,
        # What the retries generated at all, and of that what an earlier attempt had generated too.
        "retry_generated_pct": 100.0 * sum(1 for r in lines if "chunk" in r and r["attempt"] > 1) / chunks,
        "regenerated_chunks": sum(n - 1 for n in generated.values()),
        "regenerated_pct": 100.0 * sum(n - 1 for n in generated.values()) / chunks,
        "chars_taken_back": view.taken_back,
        "chars_received_twice": (len(tokens) - len(set(tokens))) * WIDTH,
        "effects": len(effects),
        "effects_expected": len(range(0, chunks, every)),
        "effects_repeated": sum(n - 1 for n in effects.values()),
        "signal_to_done_s": seen["signal_to_done_s"],
        "final_state": next((state_of(p) for _, _, p in reversed(seen["after"]) if state_of(p)), None),
        "client_exact": view.closing == whole and whole.startswith(view.text),
        "stored_exact": stored_text == whole,
        "chunk_delay_p50_ms": (percentile(delays, 0.5) or 0) * 1000,
        "chunk_delay_p99_ms": (percentile(delays, 0.99) or 0) * 1000,
        "chunk_delays": len(delays),
        "log_errors": log_problems(*procs),
    }


def verdict(r: dict[str, Any]) -> str:
    if r["adapter"] != "continuing":
        return "—"
    ok = (
        r["regenerated_pct"] <= TARGET_REGENERATED_PCT
        and r["effects_repeated"] == 0
        and r["chars_taken_back"] == 0
        and r["chars_received_twice"] == 0
        and r["client_exact"]
        and r["stored_exact"]
    )
    return "PASS" if ok else "FAIL"


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| adapter | event | run | attempts | retry generated | generated again | taken back (chars) | received twice (chars) "
        "| side effects repeated | signal → completed | client / stored exact | chunk delay p50 / p99 (live, before the signal) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['adapter']} | {r['event']} | {r['run']} | {len(r['attempts'])} | "
            f"{r['retry_generated_pct']:.0f} % of the answer | "
            f"{r['regenerated_chunks']} chunks ({r['regenerated_pct']:.1f} %) | {r['chars_taken_back']} | "
            f"{r['chars_received_twice']} | {r['effects_repeated']} of {r['effects_expected']} | "
            f"{r['signal_to_done_s']:.1f} s | {'yes' if r['client_exact'] else 'NO'} / "
            f"{'yes' if r['stored_exact'] else 'NO'} | {r['chunk_delay_p50_ms']:.1f} / "
            f"{r['chunk_delay_p99_ms']:.1f} ms | {verdict(r)} |"
        )
    return lines


def commit() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    return "?"


def cost(results: list[dict[str, Any]]) -> list[str]:
    """Write-ahead's cost at one stream: the median chunk delays of each adapter kind."""
    out = []
    for q in ("p50", "p99"):
        by_kind = {
            kind: statistics.median(r[f"chunk_delay_{q}_ms"] for r in results if r["adapter"] == kind)
            for kind in ADAPTERS
            if any(r["adapter"] == kind for r in results)
        }
        if len(by_kind) == 2:
            out.append(
                f"Chunk delay {q} (median of the cases): continuing (write-ahead) "
                f"{by_kind['continuing']:.1f} ms, plain (behind the store) {by_kind['plain']:.1f} ms."
            )
    return out


def write_doc(results: list[dict[str, Any]], argv: str, load: str) -> None:
    chunks = results[0]["chunks"] if results else 500
    block = "\n".join(
        [
            BEGIN,
            "## Work repeated after a crash (`python -m bench.crash_repeat`)",
            "",
            f"Run `{argv}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {commit()} (load average "
            f"before: {load}): one durable task, SQLite store, a {chunks}-chunk answer 20 ms apart "
            "with a side effect before every 50th chunk, streamed live (raw SSE); when the adapter has "
            "generated half of it, `kill9` kills the server and starts it again, `sigterm` stops it "
            f"(grace {SHUTDOWN_GRACE} s) while a second replica is up; the client resumes with "
            f"`Last-Event-ID` there. Heartbeat timeout {HEARTBEAT_TIMEOUT} s (most of the kill's time to "
            "completion). *Retry generated*: the chunks later attempts generated, as a share of the answer; "
            "*generated again*: those an earlier attempt had generated already (work paid twice). "
            "`plain` is today's adapter (restarts the answer, side effects as plain calls); "
            "`continuing` sets `continues_partial` and wraps its side effects in `step(...)`, and streams "
            "write-ahead (a chunk reaches a client once stored). Targets (continuing): generated "
            f"again ≤ {TARGET_REGENERATED_PCT:g} % of the answer, 0 side effects repeated, 0 characters "
            "taken back or received twice. The chunk delay (generated → received live, one stream) is "
            "write-ahead's cost: the plain adapter's chunks are stored behind the stream.",
            "",
            *table(results),
            "",
            *cost(results),
            END,
        ]
    )
    DOC.write_text(splice_block(DOC.read_text() if DOC.exists() else "", BEGIN, END, block))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", choices=ADAPTERS, action="append")
    parser.add_argument("--event", choices=EVENTS, action="append")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--effect-every", type=int, default=50)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    # SIGTERM ends the run through the `finally` blocks: every process started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    root = Path(tempfile.mkdtemp(prefix="bench-crash-repeat-"))
    temporal = TemporalDevServer(root / "temporal")
    results: list[dict[str, Any]] = []
    try:
        temporal.start()
        for run in range(1, args.runs + 1):
            for adapter in args.adapter or ADAPTERS:
                for event in args.event or EVENTS:
                    r = run_case(root, temporal, adapter, event, run, args.chunks, args.delay, args.effect_every)
                    results.append(r)
                    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}))
    finally:
        temporal.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crash_repeat.json").write_text(json.dumps({"load_before": load, "results": results}, indent=1))
    print("\n".join(table(results)))
    if not args.no_docs:
        write_doc(results, " ".join(["python -m bench.crash_repeat", *sys.argv[1:]]), load)


if __name__ == "__main__":
    main()

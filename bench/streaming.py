"""Streaming-load benchmark: many long streams at once, against a bare SSE floor.

    python -m bench.streaming                 # full run: N in 1, 20, 100, 500; every mode and store
    python -m bench.streaming --quick         # smoke run, ~2 min: N in 1, 20; fewer modes
    python -m bench.streaming --only direct-sqlite --only floor --n 100   # a subset

Scenarios (`--only` names): direct-sqlite, direct-memory, direct-postgres,
durable-sqlite, durable-postgres, floor, temporal-floor, growth. Durable mode with the memory
store is not run: that store lives in one process and is lost with it, so
durable execution over it is not meaningful.

1. Streaming load: N concurrent `SendStreamingMessage`, each answer 500 chunks
   20 ms apart (10 s of generation), over real HTTP/SSE to a fresh
   `python -m molecule_runtime serve` per (mode, store, N) with
   ADAPTER_MODULE=bench.streaming_adapter. Durable runs get a fresh Temporal dev
   server each (so its CPU and history are the scenario's own); PostgreSQL runs
   a fresh database in one throw-away cluster started here.
2. Cost growth: one answer alone, STREAM_BATCH_WINDOW=0, no delay: time per
   chunk of a 400- vs a 4000-chunk answer (direct, SQLite) and the stored size;
   again with chunks 1 ms apart (a runtime that merges chunks while a store
   write is in flight streams a no-delay answer in a handful of events).
3. Floor: `bench/streaming_floor.py`, a bare Starlette + uvicorn SSE endpoint
   relaying the same chunks with the same batching, same N.
4. Temporal floor: `bench/temporal_floor.py`, the durable scenarios' lower
   bound: the runtime's workflow shape on a bare temporalio client + worker,
   the same generation schedule and heartbeats, no A2A and no store, same N, a
   fresh dev server each.

Outputs: bench/results/streaming.json (a run with --only/--n writes
streaming-subset.json instead and leaves the docs alone unless --docs), the
block between `<!-- streaming:begin -->` and `<!-- streaming:end -->` in
docs/performance.md, and docs/streaming.png. The load client is a process of
its own (bench/stream_load.py). Every process started here is stopped by PID /
process group; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import streaming_report
from bench.client import Conn
from bench.procs import REPO, Proc, python_module, rss_kib
from bench.stream_load import Stream, one_stream, raise_fd_limit
from bench.streaming_adapter import ATTEMPTS_LOG, check_text
from tests.support.postgres import PostgresServer, find_bindir
from tests.support.temporal import TemporalDevServer

RESULTS = REPO / "bench" / "results"
RUNTIME_SCENARIOS = ("direct-memory", "direct-sqlite", "direct-postgres", "durable-sqlite",
                     "durable-postgres")
ALL = ("floor", "temporal-floor", *RUNTIME_SCENARIOS, "growth")
QUICK = ("floor", "temporal-floor", "direct-memory", "direct-sqlite", "durable-sqlite", "growth")
CLK_TCK = os.sysconf("SC_CLK_TCK")
DURABLE_MEMORY = ("not run: the memory store lives in one process and is lost with it, so a "
                  "durable task could not be resumed from it; durable execution over it is not meaningful")


@dataclass(frozen=True)
class Plan:
    quick: bool
    levels: tuple[int, ...]
    scenarios: tuple[str, ...]
    chunks: int = 500
    delay: float = 0.02
    timeout_factor: float = 10.0  # a burst is abandoned after this many x generation time
    batch_window: float = 0.05  # the runtime's default STREAM_BATCH_WINDOW, also the floor's
    growth_sizes: tuple[int, ...] = (400, 4000)
    growth_repeats: int = 3
    growth_paced_delay: float = 0.001  # the paced variant of the cost growth

    @property
    def generation_s(self) -> float:
        return self.chunks * self.delay


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- /proc readings -------------------------------------------------------


def cpu_s(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()  # fields[0] is field 3 (state)
    ticks = int(fields[11]) + int(fields[12])
    if children:  # + its waited-for children (cutime, cstime)
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_cpu_s(root: int) -> float:
    """CPU of a server that forks a process per connection (PostgreSQL): the root,
    its reaped children and its live children. Differences of two readings are
    exact as long as every child is a direct child of the root."""
    total = cpu_s(root, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == root:
                total += cpu_s(int(entry.name))
    return total


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """Peak VmRSS of some processes, sampled every 100 ms in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError, RuntimeError):
                    self.peak[name] = max(self.peak[name], rss_kib(pid))
            self._stop.wait(0.1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- the load client process ---------------------------------------------


class LoadClient:
    """bench/stream_load.py in a process of its own, driven line by line."""

    def __init__(self, cfg: dict[str, Any], stderr_path: Path) -> None:
        # stderr to a file: a pipe nobody reads during the burst could fill and stall the client.
        self.stderr_path = stderr_path
        with open(stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                python_module("bench.stream_load", json.dumps(cfg)),
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                text=True, start_new_session=True,
            )

    def expect(self, timeout: float) -> str:
        """The client's next line (each step of the handshake prints exactly one)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"load client silent for {timeout:g} s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.stderr_path.read_text(errors="replace")
            raise RuntimeError(f"load client exited ({self.proc.wait()}): {err[-2000:]}")
        return line.strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        from tests.support.procs import stop_process

        stop_process(self.proc, grace=5)


# ---- one burst ------------------------------------------------------------


def burst(port: int, plan: Plan, n: int, pids: dict[str, int], tree: dict[str, int],
          verify: bool, workdir: Path) -> dict[str, Any]:
    """N concurrent streams from the load client; CPU of `pids` (and of `tree`: process trees)
    over exactly the burst, peak RSS of `pids` while it runs."""
    timeout = plan.timeout_factor * plan.generation_s
    client = LoadClient({"port": port, "n": n, "chunks": plan.chunks, "delay": plan.delay,
                         "timeout": timeout, "verify": verify}, workdir / "load-client.err")
    try:
        if client.expect(60) != "ready":
            raise RuntimeError("load client did not start")
        # The load client's CPU too: on 2 cores it competes with the servers.
        pids = {**pids, "client": client.proc.pid}
        before = {k: cpu_s(p) for k, p in pids.items()} | {k: tree_cpu_s(p) for k, p in tree.items()}
        rss_before = {k: rss_kib(p) for k, p in pids.items()}
        with RssSampler(pids) as sampler:
            client.send("go")
            if client.expect(timeout + 60) != "burst-done":
                raise RuntimeError("load client out of step")
            after = {k: cpu_s(p) for k, p in pids.items()} | {k: tree_cpu_s(p) for k, p in tree.items()}
        client.send("verify")
        result: dict[str, Any] = json.loads(client.expect(300))
    finally:
        client.close()
    result["cpu_s"] = {k: after[k] - before[k] for k in before}
    result["rss_before_kib"] = rss_before
    result["rss_peak_kib"] = sampler.peak
    result["generation_s"] = plan.generation_s
    result["wall_over_generation"] = result["wall_s"] / plan.generation_s
    return result


def attempts(data_dir: Path, task_ids: list[str]) -> dict[str, Any]:
    """Adapter runs per task from the adapter's attempts.log."""
    runs: Counter[str] = Counter()
    path = data_dir / ATTEMPTS_LOG
    if path.exists():
        for line in path.read_text().splitlines():
            runs[line.split(" ", 1)[0]] += 1
    counts = [runs[t] for t in task_ids]
    return {
        "adapter_runs": sum(counts),
        "reruns": sum(max(0, c - 1) for c in counts),
        "exactly_once": sum(1 for c in counts if c == 1),
        "never_ran": sum(1 for c in counts if c == 0),
        "tasks_rerun": sum(1 for c in counts if c > 1),
    }


def log_findings(proc: Proc) -> list[str]:
    """Distinct WARNING/ERROR lines of a server's log (first 8, timestamps cut)."""
    try:
        lines = proc.log_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    seen: dict[str, int] = {}
    for line in lines:
        if " WARNING " in line or " ERROR " in line or "Traceback" in line:
            key = line.split(" ", 2)[-1][:200]
            seen[key] = seen.get(key, 0) + 1
    return [f"{k} (x{v})" for k, v in list(seen.items())[:8]]


async def warm_up(port: int, count: int = 3) -> None:
    """A few short streams so imports, the workflow sandbox and the store are warm."""
    for _ in range(count):
        s = Stream()
        await asyncio.wait_for(one_stream(port, 5, 0.0, time.perf_counter(), s), 60)
        if s.state != "TASK_STATE_COMPLETED":
            raise RuntimeError(f"warm-up stream on port {port} ended {s.state or s.error!r}")


# ---- servers ---------------------------------------------------------------


def runtime_proc(root: Path, name: str, *, store_url: str | None, temporal: str | None,
                 **extra: str) -> Proc:
    env = {"MOLECULE_DATA_DIR": str(root / name / "data"), "ADAPTER_MODULE": "bench.streaming_adapter",
           "LOG_LEVEL": "WARNING", **extra}
    if store_url:
        env["TASK_STORE_URL"] = store_url
    if temporal:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        env |= {"TEMPORAL_HOST": temporal, "TEMPORAL_TASK_QUEUE": queue, "WORKSPACE_ID": f"ws-{queue}"}
    return Proc(name, python_module("molecule_runtime", "serve"), env, root / name)


class Infra:
    """PostgreSQL (one cluster per run) and Temporal (one dev server per durable scenario)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres: PostgresServer | None = None
        self.postgres_error = ""

    def pg(self) -> PostgresServer | None:
        if self.postgres is None and not self.postgres_error:
            bindir = find_bindir()
            if bindir is None:
                # Installs Debian's postgresql package when missing (idempotent, quick if present).
                subprocess.run(["bash", str(REPO / "scripts" / "ensure-postgres.sh")], check=False)
                bindir = find_bindir()
            if bindir is None:
                self.postgres_error = "PostgreSQL server binaries not found (scripts/ensure-postgres.sh)"
                return None
            log(f"PostgreSQL from {bindir}")
            server = PostgresServer(bindir)
            try:
                self.postgres = server.start()
            except Exception as exc:
                server.stop()  # only the postmaster we started, by its PID
                self.postgres_error = f"PostgreSQL did not start: {type(exc).__name__}: {exc}"[:500]
                return None
        return self.postgres

    @contextlib.contextmanager
    def temporal(self, name: str) -> Iterator[TemporalDevServer]:
        server = TemporalDevServer(self.root / name / "temporal")
        try:
            server.start()
            yield server
        finally:
            server.stop()

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()


def run_scenario(infra: Infra, plan: Plan, scenario: str, n: int) -> dict[str, Any]:
    mode, store = scenario.split("-")
    name = f"{scenario}-{n}"
    store_url: str | None = None
    tree: dict[str, int] = {}
    if store == "memory":
        store_url = "memory"
    elif store == "postgres":
        pg = infra.pg()
        if pg is None:
            return {"skipped": infra.postgres_error}
        store_url = pg.database()
        assert pg.proc is not None
        tree["postgres"] = pg.proc.pid
    with contextlib.ExitStack() as stack:
        temporal_addr = None
        pids: dict[str, int] = {}
        if mode == "durable":
            temporal = stack.enter_context(infra.temporal(name))
            temporal_addr = temporal.address
            assert temporal.proc is not None
            pids["temporal"] = temporal.proc.pid
        proc = runtime_proc(infra.root, name, store_url=store_url, temporal=temporal_addr)
        stack.callback(proc.stop)
        proc.start()
        proc.wait_ready()
        asyncio.run(warm_up(proc.port))
        pids = {"server": proc.pid, **pids}
        delays_before = dispatch_delays(proc.port) if mode == "durable" else {}
        result = burst(proc.port, plan, n, pids, tree, verify=True, workdir=proc.workdir)
        if mode == "durable":
            result["dispatch_delay"] = late_attempts(delays_before, dispatch_delays(proc.port))
        result |= attempts(proc.workdir / "data", result.pop("task_ids"))
        result["server_vmhwm_kib"] = status_kib(proc.pid, "VmHWM")
        result["log"] = log_findings(proc)
    return result


def run_floor(root: Path, plan: Plan, n: int) -> dict[str, Any]:
    proc = Proc(f"floor-{n}", python_module("bench.streaming_floor", str(plan.batch_window)), {},
                root / f"floor-{n}")
    try:
        proc.start()
        proc.wait_ready()
        asyncio.run(warm_up(proc.port))
        result = burst(proc.port, plan, n, {"server": proc.pid}, {}, verify=False, workdir=proc.workdir)
        result.pop("task_ids")
        result["server_vmhwm_kib"] = status_kib(proc.pid, "VmHWM")
    finally:
        proc.stop()
    return result


def run_temporal_floor(infra: Infra, plan: Plan, n: int) -> dict[str, Any]:
    """`bench/temporal_floor.py` against a fresh dev server; its CPU and the server's."""
    name = f"temporal-floor-{n}"
    with infra.temporal(name) as temporal:
        assert temporal.proc is not None
        argv = python_module("bench.temporal_floor", temporal.address, str(temporal.proc.pid), str(n),
                             str(plan.chunks), str(plan.delay))
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO,
                              timeout=plan.timeout_factor * plan.generation_s + 120)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench.temporal_floor exited {done.returncode}: {done.stderr.strip()[-1500:]}")
    return json.loads(lines[-1])


# ---- cost growth -------------------------------------------------------------


def sqlite_row(db: Path, task_id: str) -> dict[str, Any]:
    """Bytes of the task's row in the `tasks` table, its rows in `task_events`, the file sizes."""
    out: dict[str, Any] = {"db_bytes": sum(p.stat().st_size for p in db.parent.glob(db.name + "*")
                                            if p.suffix != ".init-lock")}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return out | {"error": str(exc)}
    try:
        cur = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,))
        row = cur.fetchone()
        if row is not None:
            out["tasks_row_bytes"] = sum(len(v) if isinstance(v, bytes | str) else 8 for v in row
                                         if v is not None)
        with contextlib.suppress(sqlite3.Error):
            ev = conn.execute("SELECT count(*), coalesce(sum(length(event_data)), 0) FROM task_events "
                              "WHERE task_id = ?", (task_id,)).fetchone()
            out["task_events_rows"], out["task_events_bytes"] = ev
    except sqlite3.Error as exc:
        out["error"] = str(exc)
    finally:
        conn.close()
    return out


async def one_answer(port: int, chunks: int, delay: float) -> tuple[Stream, dict[str, Any]]:
    s = Stream()
    await asyncio.wait_for(one_stream(port, chunks, delay, time.perf_counter(), s), 600)
    conn = Conn(port)
    try:
        task = await conn.call("GetTask", {"id": s.task_id})
    finally:
        await conn.close()
    return s, task


def growth_sizes(proc: Proc, plan: Plan, delay: float, label: str) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for chunks in plan.growth_sizes:
        runs: list[dict[str, Any]] = []
        # Best of a few runs against noise; a run that took over 10 s is not
        # noise-bound, so it is not repeated (that keeps slow code's run short).
        while len(runs) < plan.growth_repeats and (not runs or runs[-1]["wall_s"] < 10):
            cpu0 = cpu_s(proc.pid)
            s, task = asyncio.run(one_answer(proc.port, chunks, delay))
            cpu = cpu_s(proc.pid) - cpu0
            arts = task.get("artifacts") or []
            stored = "".join(p.get("text", "") for a in arts for p in a.get("parts", []))
            runs.append({
                "task_id": s.task_id,
                "state": task["status"]["state"],
                "exact": s.state == "TASK_STATE_COMPLETED" and check_text(s.text, chunks) is None
                and stored == s.text,
                "events": s.events,
                "wall_s": s.end_s,
                "per_chunk_s": s.end_s / chunks,
                # From the first chunk on: the per-chunk cost without task set-up.
                "per_chunk_streaming_s": (s.end_s - s.first_chunk_s) / max(1, chunks - 1),
                "server_cpu_per_chunk_s": cpu / chunks,
                "parts": sum(len(a.get("parts", [])) for a in arts),
                "artifacts": len(arts),
                "task_json_bytes": len(json.dumps(task, separators=(",", ":")).encode()),
            })
        best = min(runs, key=lambda r: r["per_chunk_streaming_s"])
        best["repeats"] = len(runs)
        best["all_exact"] = all(r["exact"] for r in runs)
        best["per_chunk_streaming_runs_s"] = [r["per_chunk_streaming_s"] for r in runs]
        best |= sqlite_row(proc.workdir / "data" / "tasks.db", best["task_id"])
        sizes[str(chunks)] = best
        log(f"  growth, {label}, {chunks} chunks: {best['per_chunk_streaming_s'] * 1e6:.0f} µs/chunk, "
            f"{best['server_cpu_per_chunk_s'] * 1e6:.0f} µs CPU/chunk, {best['events']} SSE events, "
            f"{best['parts']} parts, {best['task_json_bytes']} B task JSON")
    return sizes


def run_growth(root: Path, plan: Plan) -> dict[str, Any]:
    """`sizes`: chunks with no delay, as asked. A runtime that merges chunks while a
    store write is in flight sends those in a few events whatever the window, so
    `paced` (a short delay per chunk, one event per chunk if the store keeps up)
    also shows how the cost of each event grows with the answer."""
    proc = runtime_proc(root, "growth", store_url=None, temporal=None, STREAM_BATCH_WINDOW="0")
    out: dict[str, Any] = {}
    try:
        proc.start()
        proc.wait_ready()
        asyncio.run(warm_up(proc.port))
        out["sizes"] = growth_sizes(proc, plan, 0.0, "no delay")
        out["paced"] = {"delay": plan.growth_paced_delay,
                        "sizes": growth_sizes(proc, plan, plan.growth_paced_delay,
                                              f"{plan.growth_paced_delay * 1000:g} ms apart")}
        out["log"] = log_findings(proc)
    finally:
        proc.stop()
    return out


# ---- the run ------------------------------------------------------------------


KEEP: Path | None = None  # --keep: the run's folder (servers' logs, Temporal's database) stays there


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    if KEEP is not None:
        KEEP.mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix="run-", dir=KEEP))
        return
    root = Path(tempfile.mkdtemp(prefix="molecule-bench-stream-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


DISPATCH_METRIC = "molecule_attempt_dispatch_delay_seconds_bucket"


def dispatch_delays(port: int) -> dict[float, float]:
    """The server's histogram of how late llm_call attempts reached its event loop
    (cumulative count per bucket bound, seconds)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(DISPATCH_METRIC + "{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def late_attempts(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """The burst's attempts: how many, how many reached the loop more than 5 / 10 s
    after Temporal started them, and the bucket bound under which all did."""
    count = {b: after[b] - before.get(b, 0.0) for b in after}
    total = count.get(float("inf"), 0.0)
    def over(bound: float) -> int:
        return int(total - count.get(bound, total))
    all_under = min((b for b, c in count.items() if c >= total), default=float("nan"))
    return {"attempts": int(total), "over_5s": over(5.0), "over_10s": over(10.0), "max_le_s": all_under}


def summary_line(key: str, n: int, r: dict[str, Any]) -> str:
    if "skipped" in r or "error" in r:
        # The last line of an error says most (a server's start-up traceback ends with its cause).
        text = r.get("skipped") or r.get("error", "")
        lines = [x for x in text.splitlines() if x.strip()]
        return f"  {key} N={n}: {lines[0]} ... {lines[-1]}" if len(lines) > 1 else f"  {key} N={n}: {text}"
    cpu = r["cpu_s"].get("server", float("nan"))
    line = (f"  {key} N={n}: wall/gen {r['wall_over_generation']:.2f}x, SSE exact {r['sse_exact']}/{n}"
            f"{', stored exact ' + str(r['stored_exact']) + '/' + str(n) if 'stored_exact' in r else ''}"
            f", server CPU {cpu:.1f} s, delay p50 {r['delay_p50_s'] * 1000:.0f} ms"
            f" p99 {r['delay_p99_s'] * 1000:.0f} ms")
    if "reruns" in r:
        line += f", re-runs {r['reruns']}, never ran {r['never_ran']}"
    if "temporal" in r["cpu_s"]:
        line += f", Temporal CPU {r['cpu_s']['temporal']:.1f} s"
    if "dispatch_delay" in r:
        d = r["dispatch_delay"]
        line += (f", llm_call reached the loop >5 s late {d['over_5s']}/{d['attempts']}"
                 f" (>10 s {d['over_10s']}, all ≤ {d['max_le_s']:g} s)")
    if "postgres" in r["cpu_s"]:
        line += f", PostgreSQL CPU {r['cpu_s']['postgres']:.1f} s"
    return line


def run(plan: Plan) -> dict[str, Any]:
    from bench.run import load_average, machine_info

    result: dict[str, Any] = {"plan": asdict(plan), "machine": machine_info(),
                              "load_before": load_average(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "scenarios": {}, "skipped": {"durable-memory": DURABLE_MEMORY}}
    t0 = time.monotonic()
    with workspace() as root:
        infra = Infra(root)
        try:
            for key in plan.scenarios:
                if key == "temporal-floor":
                    floors: dict[str, Any] = {}
                    result["temporal_floor"] = floors
                    for n in plan.levels:
                        log(f"temporal floor: {n} workflows of the runtime's shape, bare temporalio")
                        try:
                            floors[str(n)] = r = run_temporal_floor(infra, plan, n)
                            log(f"  temporal floor N={n}: wall/gen {r['wall_over_generation']:.2f}x, "
                                f"completed {r['completed']}/{n}, first step p50 {r['first_chunk_p50_s']:.2f} s "
                                f"max {r['first_chunk_max_s']:.2f} s, process CPU {r['cpu_s']['server']:.1f} s, "
                                f"Temporal CPU {r['cpu_s']['temporal']:.1f} s")
                        except Exception as exc:
                            floors[str(n)] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                            log(f"  temporal floor N={n} failed: {exc}")
                    continue
                if key == "growth":
                    log(f"cost growth: one answer of {' vs '.join(map(str, plan.growth_sizes))} chunks, "
                        "STREAM_BATCH_WINDOW=0, no delay (direct, SQLite)")
                    try:
                        result["growth"] = run_growth(root, plan)
                    except Exception as exc:
                        result["growth"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                        log(f"  growth failed: {exc}")
                    continue
                levels: dict[str, Any] = {}
                result["scenarios"][key] = levels
                for n in plan.levels:
                    log(f"{key}: {n} concurrent streams x {plan.chunks} chunks, {plan.delay * 1000:g} ms apart")
                    try:
                        r = run_floor(root, plan, n) if key == "floor" else run_scenario(infra, plan, key, n)
                    except Exception as exc:
                        r = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                    levels[str(n)] = r
                    log(summary_line(key, n, r))
        finally:
            infra.close()
    result["load_after"] = load_average()
    result["duration_s"] = time.monotonic() - t0
    result["targets"] = streaming_report.targets(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N in 1, 20 and fewer modes (~2 min)")
    parser.add_argument("--only", action="append", default=[], metavar="SCENARIO",
                        help=f"run only these (repeat or comma-separate): {', '.join(ALL)}")
    parser.add_argument("--n", action="append", type=int, default=[], help="run only these N (repeatable)")
    parser.add_argument("--docs", action="store_true", help="write the docs even for a --only/--n subset")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the run's folder (servers' logs, Temporal's database) under DIR")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the docs from bench/results/streaming.json, measure nothing")
    args = parser.parse_args()
    global KEEP
    KEEP = args.keep
    if args.report_only:
        result = json.loads((RESULTS / "streaming.json").read_text())
        result["targets"] = streaming_report.targets(result)
        print(streaming_report.console(result))
        streaming_report.write_docs(result, REPO / "docs")
        return
    only = [x.strip() for item in args.only for x in item.split(",") if x.strip()]
    unknown = sorted(set(only) - set(ALL))
    if "durable-memory" in unknown:
        parser.error(f"durable-memory is {DURABLE_MEMORY}")
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(ALL)}")
    base = QUICK if args.quick else ALL
    scenarios = tuple(s for s in ALL if s in (only or base))
    levels = tuple(sorted(set(args.n))) if args.n else ((1, 20) if args.quick else (1, 20, 100, 500))
    plan = Plan(quick=args.quick, levels=levels, scenarios=scenarios,
                growth_repeats=1 if args.quick else 3)
    subset = bool(only or args.n)
    raise_fd_limit()  # inherited by every server started here
    result = run(plan)
    out = RESULTS / ("streaming-subset.json" if subset else "streaming.json")
    result |= {"subset": subset, "output": str(out.relative_to(REPO)),
               "command": " ".join(["python -m bench.streaming", *sys.argv[1:]])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(streaming_report.console(result))
    log(f"wrote {out.relative_to(REPO)}")
    if not args.no_docs and (args.docs or not subset):
        streaming_report.write_docs(result, REPO / "docs")
        log("wrote the streaming block of docs/performance.md and docs/streaming.png")


if __name__ == "__main__":
    main()

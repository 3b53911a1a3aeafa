"""Store outage under load: N concurrent streams while PostgreSQL goes away.

    python -m bench.store_outage                  # N=100, every fault, direct and durable
    python -m bench.store_outage --n 20 --fault starting-up --mode direct   # a subset

Each scenario is a fresh runtime on a fresh database of one throw-away PostgreSQL
cluster, reached through a TCP proxy (tests/support/pg_proxy.py) that can
answer SQLSTATE 57P03 like a server in crash recovery. The load client of
bench.streaming (bench/stream_load.py, a process of its own) starts N streams
of 500 chunks 20 ms apart; `--at` seconds later the fault happens:

- `restart`: fast shutdown of PostgreSQL (SIGINT), started again 3 s later;
- `down-20s`: PostgreSQL stopped for 20 s;
- `starting-up`: every new connection answered with 57P03 for 5 s (open
  connections cut), then the server is reachable again;
- `none`: no fault, the baseline of the same run (what the load alone costs).

Reported per scenario: tasks completed with exactly the streamed text (on the
stream and as stored, GetTask), adapter runs per task (attempts.log: 1 each is
the target), the longest a chunk waited between the adapter's yield and the
client (the stall), the outage's WARNING/INFO lines and any ERROR or traceback
in the server's log. Figures go to bench/results/store_outage.json and are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.procs import REPO
from bench.streaming import Infra, LoadClient, Plan, attempts, log, runtime_proc, warm_up
from tests.support.pg_proxy import PgProxy
from tests.support.postgres import PostgresServer

FAULTS = ("none", "restart", "down-20s", "starting-up")
MODES = ("direct", "durable")
RESULTS = REPO / "bench" / "results" / "store_outage.json"


class ProxyThread:
    """A PgProxy served by an event loop of its own thread (the driver blocks)."""

    def __init__(self, upstream_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy: PgProxy = self.call(PgProxy(upstream_port).start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.call(self.proxy.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def inject(fault: str, pg: PostgresServer, proxy: ProxyThread, timings: dict[str, float]) -> None:
    timings["fault_start"] = time.monotonic()
    if fault == "none":
        pass  # the same burst without a fault: the stall the load alone causes
    elif fault == "restart":
        pg.stop(remove=False)
        time.sleep(3.0)
        pg.start()
    elif fault == "down-20s":
        pg.stop(remove=False)
        time.sleep(20.0)
        pg.start()
    else:
        proxy.call(proxy.proxy.set_mode("starting_up"))
        time.sleep(5.0)
        proxy.call(proxy.proxy.set_mode("forward"))
    timings["fault_end"] = time.monotonic()


def server_log(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines()
    return {
        "store_warnings": sum("task store unavailable" in line for line in lines),
        "store_back": [line.split("] ", 1)[-1] for line in lines if "task store is back" in line],
        "errors": sum(" ERROR " in line for line in lines),
        "tracebacks": text.count("Traceback"),
        "warnings": sum(" WARNING " in line for line in lines),
    }


def scenario(infra: Infra, plan: Plan, fault: str, mode: str, n: int, at: float) -> dict[str, Any]:
    pg = infra.pg()
    if pg is None:
        return {"skipped": infra.postgres_error}
    name = f"outage-{fault}-{mode}-{n}"
    proxy = ProxyThread(pg.port)
    with contextlib.ExitStack() as stack:
        stack.callback(proxy.close)
        url = proxy.proxy.url(pg.database(), pg.port)
        temporal = stack.enter_context(infra.temporal(name)) if mode == "durable" else None
        proc = runtime_proc(
            infra.root,
            name,
            store_url=url,
            temporal=temporal.address if temporal is not None else None,
            LOG_LEVEL="INFO",
            TEMPORAL_MAX_ATTEMPTS="3",
        )
        stack.callback(proc.stop)
        proc.start()
        proc.wait_ready()
        asyncio.run(warm_up(proc.port))
        timeout = plan.timeout_factor * plan.generation_s + 60
        client = LoadClient(
            {"port": proc.port, "n": n, "chunks": plan.chunks, "delay": plan.delay,
             "timeout": timeout, "verify": True, "verify_timeout": 180.0},
            proc.workdir / "load-client.err",
        )
        timings: dict[str, float] = {}
        try:
            if client.expect(60) != "ready":
                raise RuntimeError("load client did not start")
            client.send("go")
            started = time.monotonic()
            time.sleep(at)
            inject(fault, pg, proxy, timings)
            if client.expect(timeout + 60) != "burst-done":
                raise RuntimeError("load client out of step")
            client.send("verify")
            result: dict[str, Any] = json.loads(client.expect(300))
        finally:
            client.close()
    result |= attempts(proc.workdir / "data", result.pop("task_ids"))
    result["fault"] = fault
    result["mode"] = mode
    result["fault_at_s"] = timings["fault_start"] - started
    result["fault_s"] = timings["fault_end"] - timings["fault_start"]
    result["log"] = server_log(proc.log_path)
    return result


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| fault | mode | N | completed exact (stream / stored) | adapter runs per task | stall (longest chunk wait) | fault (s) | wall (s) | log: store WARNING / ERROR / tracebacks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            rows.append(f"| {r.get('fault')} | {r.get('mode')} | | skipped: {r['skipped']} | | | | | |")
            continue
        runs = f"{r['exactly_once']} once, {r['tasks_rerun']} re-run, {r['never_ran']} never"
        log_ = r["log"]
        rows.append(
            f"| {r['fault']} | {r['mode']} | {r['n']} | {r['sse_exact']} / {r.get('stored_exact', '?')} "
            f"| {runs} | {r['delay_max_s']:.1f} s | {r['fault_s']:.1f} | {r['wall_s']:.1f} "
            f"| {log_['store_warnings']} / {log_['errors']} / {log_['tracebacks']} |"
        )
    return "\n".join(rows)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="molecule-outage-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--fault", action="append", choices=FAULTS)
    parser.add_argument("--mode", action="append", choices=MODES)
    parser.add_argument("--at", type=float, default=5.0, help="seconds into the burst")
    parser.add_argument("--chunks", type=int, default=500)
    args = parser.parse_args()
    plan = Plan(quick=False, levels=(args.n,), scenarios=(), chunks=args.chunks)
    results: list[dict[str, Any]] = []
    with workspace() as root:
        infra = Infra(root)
        try:
            for fault in args.fault or FAULTS:
                for mode in args.mode or MODES:
                    log(f"{fault} / {mode} / N={args.n}")
                    try:
                        r = scenario(infra, plan, fault, mode, args.n, args.at)
                    except Exception as exc:
                        r = {"fault": fault, "mode": mode,
                             "skipped": f"{type(exc).__name__}: {exc}"[:300]}
                    results.append(r)
                    if "skipped" not in r:
                        log(f"  exact {r['sse_exact']}/{r['n']} (stored {r.get('stored_exact')}), "
                            f"runs once {r['exactly_once']}, stall {r['delay_max_s']:.1f} s, "
                            f"log {r['log']}")
                    else:
                        log(f"  skipped: {r['skipped']}")
        finally:
            infra.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # Earlier runs are kept (the last 10): figures of one machine differ from run to run.
    runs = json.loads(RESULTS.read_text()).get("runs", []) if RESULTS.exists() else []
    runs.append({"at": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results})
    RESULTS.write_text(json.dumps({"runs": runs[-10:]}, indent=2, default=str))
    print(table(results))


if __name__ == "__main__":
    main()

"""Two replicas under a burst: durable tasks completed exactly, attempts per task, recovery.

    python -m bench.replicas                       # the full matrix (long: ~1 h on 2 cores)
    python -m bench.replicas --quick               # N=20, one run per case (~5 min)
    python -m bench.replicas --n 100 --runs 5 --signal none --store sqlite   # a subset

One Temporal dev server, one store (SQLite file or a PostgreSQL database) and two
runtime replicas (own MOLECULE_INSTANCE_ID and port, same WORKSPACE_ID and queue),
TEMPORAL_HEARTBEAT_TIMEOUT=5, the streaming benchmark's adapter (500 chunks 20 ms
apart unless --chunks/--delay say otherwise). N concurrent *blocking* JSON-RPC
`SendMessage`s go to replica A, as an operator's load balancer would send them
while B idles. Then, per `--signal`:

- `none`: nothing happens; every task must complete with its exact text and the
  adapter must run exactly once per task.
- `sigterm`: replica A gets SIGTERM 5 s into the burst (a deploy). A client whose
  answer is cut short (a retryable refusal, or its connection closed) sends the
  same message again to B, as the refusal says; A is started again once it exited.
- `kill9`: replica A is killed 5 s into the burst and started again (same
  instance id and port); cut clients send their message again to B.

Reported per case and run: completed with exact text (checked with `GetTask` on
B after the burst), FAILED / other states, adapter attempts per task (from each
replica's attempts.log), clients told to resend, time from the signal to the last
task completed, and ERROR / Traceback lines in the replicas' logs. Writes
bench/results/replicas.json and its block of docs/performance.md (between
`<!-- replicas:begin -->` and `<!-- replicas:end -->`). Every process is started
here and stopped by PID / process group; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.procs import REPO, Proc, python_module
from bench.report import splice_block
from bench.stream_load import raise_fd_limit
from bench.streaming_adapter import ATTEMPTS_LOG, check_text
from tests.support.postgres import PostgresServer, find_bindir
from tests.support.temporal import TemporalDevServer

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- replicas:begin -->", "<!-- replicas:end -->"
COMPLETED = "TASK_STATE_COMPLETED"
SIGNAL_AT = 5.0
KEEP_LOGS: Path | None = None  # --keep-logs: the replicas' logs are copied there
HEADERS = {"A2A-Version": "1.0", "Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    store: str
    signal: str
    n: int


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rpc(method: str, params: dict[str, Any], request_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


class Burst:
    """N blocking sends to A; a cut one is sent again (same messageId) to B."""

    def __init__(self, a: str, b: str, n: int, chunks: int, delay: float) -> None:
        self.urls = (a, b)
        self.messages = [
            {
                "role": "ROLE_USER",
                "messageId": str(uuid.uuid4()),
                "parts": [{"text": "go"}],
                "metadata": {"chunks": chunks, "delay": delay},
            }
            for _ in range(n)
        ]
        self.chunks = chunks
        self.task_ids: list[str] = [""] * n
        self.resent = 0
        self.refused_resend = 0  # cut clients told to send again (not just a broken connection)
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []  # the first few error messages, for the report
        self.done_at: list[float] = [float("nan")] * n

    async def _send(self, http: httpx.AsyncClient, url: str, i: int) -> dict[str, Any]:
        body = rpc("SendMessage", {"message": self.messages[i]}, i)
        reply = await http.post(url + "/", json=body, headers=HEADERS)
        if reply.status_code != 200:
            raise httpx.HTTPStatusError(f"HTTP {reply.status_code}", request=reply.request, response=reply)
        return reply.json()

    async def one(self, http: httpx.AsyncClient, i: int) -> None:
        url = self.urls[0]
        for attempt in range(30):
            try:
                answer = await self._send(http, url, i)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                # The replica went away under the request: the load balancer's next pick.
                self.errors[type(exc).__name__] += 1
                url = self.urls[1]
                self.resent += 1
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
                continue
            error = answer.get("error")
            if error is not None:
                reason = ""
                for detail in error.get("data") or []:
                    if isinstance(detail, dict) and detail.get("reason"):
                        reason = detail["reason"]
                self.errors[f"{error.get('code')} {reason}".strip()] += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(f"{error.get('code')}: {str(error.get('message'))[:300]}")
                if error.get("code") == -32000:  # retryable: send the same message again
                    self.refused_resend += 1
                    self.resent += 1
                    url = self.urls[1]
                    await asyncio.sleep(1.0)
                    continue
                return
            task = answer.get("result", {}).get("task", {})
            self.task_ids[i] = task.get("id", "")
            if task.get("status", {}).get("state") == COMPLETED:
                self.done_at[i] = time.monotonic()
                return
            # Answered with an unfinished task: what a blocking client must never get.
            self.errors["unfinished " + task.get("status", {}).get("state", "?")] += 1
            return


async def verify(url: str, burst: Burst, timeout: float) -> dict[str, Any]:
    """GetTask every task on `url` until terminal (or `timeout`): states and exact text."""
    states: Counter[str] = Counter()
    exact = 0
    wrong: list[str] = []
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=30) as http:
        for i, task_id in enumerate(burst.task_ids):
            if not task_id:
                states["no task id"] += 1
                continue
            while True:
                reply = (await http.post(url + "/", json=rpc("GetTask", {"id": task_id}, i), headers=HEADERS)).json()
                task = reply.get("result", {})
                state = task.get("status", {}).get("state", "error")
                if state in {COMPLETED, "TASK_STATE_FAILED", "TASK_STATE_CANCELED"} or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            if state == COMPLETED and burst.done_at[i] != burst.done_at[i]:
                burst.done_at[i] = time.monotonic()
            states[state] += 1
            text = "".join(p.get("text", "") for a in task.get("artifacts", []) for p in a.get("parts", []))
            problem = check_text(text, burst.chunks) if state == COMPLETED else state
            if problem is None:
                exact += 1
            elif len(wrong) < 5:
                msg = task.get("status", {}).get("message", {}).get("parts", [{}])[0].get("text", "")
                wrong.append(f"{task_id[:8]}: {problem} {msg[:160]}")
    return {"states": dict(states), "exact": exact, "wrong": wrong}


def attempts(dirs: list[Path], task_ids: list[str]) -> dict[str, Any]:
    runs: Counter[str] = Counter()
    for data in dirs:
        path = data / ATTEMPTS_LOG
        if path.exists():
            for line in path.read_text().splitlines():
                runs[line.split(" ", 1)[0]] += 1
    counts = [runs[t] for t in task_ids if t]
    return {
        "adapter_runs": sum(counts),
        "exactly_once": sum(1 for c in counts if c == 1),
        "max_per_task": max(counts, default=0),
        "never_ran": sum(1 for c in counts if c == 0),
    }


def log_problems(*procs: Proc) -> dict[str, int]:
    out: dict[str, int] = {}
    for proc in procs:
        with contextlib.suppress(FileNotFoundError):
            text = proc.log_path.read_text(errors="replace")
            # Keyed by log: a restarted replica keeps its name, not its log.
            out[proc.log_path.stem] = sum(
                1 for line in text.splitlines() if " ERROR " in line or "Traceback" in line
            )
    return out


def replica(root: Path, name: str, env: dict[str, str], port: int | None = None) -> Proc:
    return Proc(
        name,
        python_module("molecule_runtime", "serve"),
        {**env, "MOLECULE_INSTANCE_ID": name, "MOLECULE_DATA_DIR": str(root / name / "data")},
        root / name,
        port=port,
    )


def run_case(root: Path, case: Case, run: int, chunks: int, delay: float, pg: PostgresServer | None) -> dict[str, Any]:
    name = f"{case.store}-{case.signal}-{case.n}-{run}"
    work = root / name
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    store_url = pg.database() if case.store == "postgres" and pg is not None else (
        f"sqlite+aiosqlite:///{work / 'tasks.db'}"
    )
    temporal = TemporalDevServer(work / "temporal")
    procs: list[Proc] = []
    try:
        temporal.start()
        env = {
            "ADAPTER_MODULE": "bench.streaming_adapter",
            "LOG_LEVEL": "INFO",
            "TASK_STORE_URL": store_url,
            "TEMPORAL_HOST": temporal.address,
            "TEMPORAL_TASK_QUEUE": queue,
            "WORKSPACE_ID": f"ws-{queue}",
            "TEMPORAL_HEARTBEAT_TIMEOUT": "5",
            "TEMPORAL_SCHEDULE_TO_START_TIMEOUT": "5",
            "MOLECULE_SHUTDOWN_GRACE": "5",
            # The burst is the point: admission control must not turn it away.
            "MOLECULE_MAX_RUNNING_TASKS": str(max(1000, case.n)),
            "MOLECULE_MAX_QUEUED_TASKS": str(max(1000, case.n)),
        }
        a = replica(work, "replica-a", env)
        b = replica(work, "replica-b", env)
        procs += [a, b]
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        burst = Burst(f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}", case.n, chunks, delay)
        generation = chunks * delay
        timeout = max(120.0, 15 * generation + case.n * 0.5)

        async def drive() -> dict[str, Any]:
            limits = httpx.Limits(max_connections=case.n + 10, max_keepalive_connections=case.n + 10)
            async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
                started = time.monotonic()
                sends = asyncio.gather(*(burst.one(http, i) for i in range(case.n)))
                signalled = float("nan")
                restarted: Proc | None = None
                if case.signal != "none":
                    await asyncio.sleep(SIGNAL_AT)
                    signalled = time.monotonic()
                    if case.signal == "sigterm":
                        a.signal(signal.SIGTERM)
                    else:
                        a.kill()
                    # Started again on its port once it is gone, as an orchestrator would.
                    await asyncio.to_thread(a.proc.wait, 60)  # type: ignore[union-attr]
                    restarted = replica(work, "replica-a", env, port=a.port)
                    restarted.log_path = work / "replica-a" / f"replica-a-{a.port}-restarted.log"
                    procs.append(restarted)
                    restarted.start()
                await asyncio.wait_for(sends, timeout)
                wall = time.monotonic() - started
                return {"wall_s": wall, "signalled": signalled, "restarted": restarted is not None}

        outcome = asyncio.run(drive())
        checked = asyncio.run(verify(burst.urls[1], burst, timeout))
        signalled = outcome.pop("signalled")
        done = [t for t in burst.done_at if t == t]
        result: dict[str, Any] = {
            "case": case.__dict__,
            "run": run,
            **outcome,
            **checked,
            **attempts([p.workdir / "data" for p in procs[:2]], burst.task_ids),
            "resent": burst.resent,
            "told_to_resend": burst.refused_resend,
            "client_errors": dict(burst.errors),
            "error_samples": burst.error_samples,
            "recovery_s": (max(done) - signalled) if done and signalled == signalled else None,
            "log_errors": log_problems(*procs),
        }
        return result
    finally:
        for proc in procs:
            proc.stop()
        temporal.stop()
        if KEEP_LOGS is not None:
            for proc in procs:
                with contextlib.suppress(OSError):
                    KEEP_LOGS.mkdir(parents=True, exist_ok=True)
                    shutil.copy(proc.log_path, KEEP_LOGS / f"{name}-{proc.log_path.name}")


def summarize(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| store | signal | N | run | completed exact | other states | adapter runs (exactly once) | told to resend | recovery s | ERROR/Traceback lines |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r["case"]
        others = {k: v for k, v in r["states"].items() if k != COMPLETED}
        rec = f"{r['recovery_s']:.1f}" if r.get("recovery_s") is not None else "—"
        lines.append(
            f"| {c['store']} | {c['signal']} | {c['n']} | {r['run']} | {r['exact']}/{c['n']} | "
            f"{others or '—'} | {r['adapter_runs']} ({r['exactly_once']}) | {r['told_to_resend']} | {rec} | "
            f"{sum(r['log_errors'].values())} |"
        )
    return lines


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for signal_name in ("none", "sigterm", "kill9"):
        rows = [r for r in results if r["case"]["signal"] == signal_name]
        if not rows:
            continue
        all_exact = all(r["exact"] == r["case"]["n"] for r in rows)
        once = all(r["exactly_once"] == r["case"]["n"] for r in rows)
        quiet = all(sum(r["log_errors"].values()) == 0 for r in rows)
        target = "100 % completed exact" + (", exactly one adapter run per task" if signal_name == "none" else "")
        ok = all_exact and (once or signal_name != "none") and (quiet or signal_name == "kill9")
        out.append(
            f"- **{signal_name}** ({len(rows)} runs): target {target}"
            + (", no ERROR or traceback" if signal_name != "kill9" else "")
            + f": **{'PASS' if ok else 'FAIL'}**"
        )
    return out


def write_doc(results: list[dict[str, Any]], argv: str) -> None:
    block = "\n".join(
        [
            BEGIN,
            "## Two replicas under a burst (`python -m bench.replicas`)",
            "",
            f"Run `{argv}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: one Temporal dev server, "
            "one store, two replicas; N concurrent blocking `SendMessage`s to replica A (streaming "
            "adapter, 500 chunks 20 ms apart unless noted), heartbeat timeout 5 s; `sigterm`/`kill9` hit A "
            "5 s into the burst and start it again; a cut client sends the same message to B. Completed "
            "exact is checked with `GetTask` on B afterwards; adapter runs from both replicas' "
            "attempts.log.",
            "",
            *verdicts(results),
            "",
            *summarize(results),
            END,
        ]
    )
    DOC.write_text(splice_block(DOC.read_text() if DOC.exists() else "", BEGIN, END, block))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, action="append")
    parser.add_argument("--store", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--signal", choices=("none", "sigterm", "kill9"), action="append")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the --merge results (and write the docs)")
    parser.add_argument("--keep-logs", type=Path, help="copy the replicas' logs to this folder")
    parser.add_argument("--merge", type=Path, action="append", default=[],
                        help="results JSON of an earlier run to report with this one's")
    args = parser.parse_args()
    global KEEP_LOGS
    KEEP_LOGS = args.keep_logs
    # SIGTERM ends the run through the `finally` blocks: every process started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    levels = args.n or ([20] if args.quick else [100, 500])
    stores = args.store or ["sqlite", "postgres"]
    signals = args.signal or ["none", "sigterm", "kill9"]
    runs = args.runs or (1 if args.quick else 5)
    root = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    pg: PostgresServer | None = None
    results: list[dict[str, Any]] = []
    try:
        if "postgres" in stores and not args.report_only:
            bindir = find_bindir()
            if bindir is None:
                raise SystemExit("PostgreSQL server binaries not found: bash scripts/ensure-postgres.sh")
            pg = PostgresServer(bindir).start()
        for n in [] if args.report_only else levels:
            for store in stores:
                for signal_name in signals:
                    for run in range(1, runs + 1):
                        case = Case(store, signal_name, n)
                        log(f"{case} run {run}")
                        r = run_case(root, case, run, args.chunks, args.delay, pg)
                        results.append(r)
                        log(
                            f"  exact {r['exact']}/{n}, states {r['states']}, adapter runs {r['adapter_runs']} "
                            f"(once {r['exactly_once']}), resent {r['resent']} (told {r['told_to_resend']}), "
                            f"recovery {r['recovery_s']}, log errors {r['log_errors']}, client {r['client_errors']}"
                        )
                        if r["wrong"]:
                            log(f"  wrong: {r['wrong']}")
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    for earlier in args.merge:
        results = json.loads(earlier.read_text())["results"] + results
    order = {"sqlite": 0, "postgres": 1, "none": 0, "sigterm": 1, "kill9": 2}
    results.sort(key=lambda r: (r["case"]["n"], order[r["case"]["store"]], order[r["case"]["signal"]]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    subset = bool(args.n or args.store or args.signal or args.runs or args.quick or args.report_only)
    out = RESULTS / ("replicas-subset.json" if subset else "replicas.json")
    out.write_text(json.dumps({"argv": " ".join(sys.argv), "results": results}, indent=1))
    print("\n".join(verdicts(results)))
    print("\n".join(summarize(results)))
    if not args.no_docs:
        write_doc(results, "python -m bench.replicas " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

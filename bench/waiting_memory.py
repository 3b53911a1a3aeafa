"""What a task waiting for input costs the server in memory (direct mode, SQLite).

    python -m bench.waiting_memory              # 2000 waiting tasks, one server (~1-2 min)
    python -m bench.waiting_memory --runs 3     # three fresh servers, verdict on the median
    python -m bench.waiting_memory --tasks 500  # a quicker look

The scenario of tests/test_waiting_memory.py, which keeps only a bound a leak
crosses: a real `molecule-runtime` process with bench.asking_adapter (every
task asks a question at once), a warm-up batch of waiting tasks, then N more
sent 20 at a time and left in `input-required`. The server's RSS is read
before the batch and after the SDK released the waiting tasks' live producers
(1 s) and live offsets (5 s). Target: ≤ 5.12 KiB per waiting task (10 MiB per
2000), judged on the median run. Baseline, same run and same process: the RSS drift of the idle, warm
server over the settle time before the batch. Writes
bench/results/waiting_memory.json and its block of docs/performance.md
(between `<!-- waiting_memory:begin -->` and `<!-- waiting_memory:end -->`).
The server is started here and stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.procs import REPO, Proc, python_module
from bench.report import splice_block

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- waiting_memory:begin -->", "<!-- waiting_memory:end -->"
# The target the test used to hold: 10 MiB per 2000 waiting tasks.
TARGET_KIB_PER_TASK = 10 * 1024 / 2000
WARM_UP = 200
# The SDK releases a waiting task's producer after 1 s, live offsets go after 5 s.
SETTLE = 7.0
HEADERS = {"A2A-Version": "1.0", "Content-Type": "application/json"}


async def park(http: httpx.AsyncClient, count: int) -> None:
    """`count` tasks left waiting for input, 20 requests at a time."""
    line = asyncio.Semaphore(20)

    async def one() -> None:
        body = {
            "jsonrpc": "2.0",
            "id": str(uuid.uuid4()),
            "method": "SendMessage",
            "params": {"message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": "ask"}]}},
        }
        async with line:
            result = (await http.post("/", json=body, headers=HEADERS)).json()
        state = result.get("result", {}).get("task", {}).get("status", {}).get("state")
        if state != "TASK_STATE_INPUT_REQUIRED":
            raise RuntimeError(f"expected a waiting task, got {result}")

    await asyncio.gather(*(one() for _ in range(count)))


async def measure(server: Proc, tasks: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=120) as http:
        ready = server.rss_kib()
        # Warm-up: imports, caches, the store's pool and the allocator's arenas.
        await park(http, WARM_UP)
        await asyncio.sleep(SETTLE)
        warm = server.rss_kib()
        # Baseline: the warm server left alone for as long as the batch settles.
        await asyncio.sleep(SETTLE)
        before = server.rss_kib()
        started = time.monotonic()
        await park(http, tasks)
        seconds = time.monotonic() - started
        peak = server.rss_kib()
        await asyncio.sleep(SETTLE)
        after = server.rss_kib()
    growth = after - before
    return {
        "waiting_tasks": tasks,
        "warm_up_tasks": WARM_UP,
        "rss_ready_mib": round(ready / 1024, 1),
        "rss_warm_mib": round(warm / 1024, 1),
        "idle_drift_mib": round((before - warm) / 1024, 2),
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "rss_growth_mib": round(growth / 1024, 2),
        "kib_per_waiting_task": round(growth / tasks, 2),
        "warm_up_kib_per_task": round((warm - ready) / WARM_UP, 2),
        "seconds_to_park": round(seconds, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def run_once(tasks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-waiting-") as root:
        work = Path(root)
        server = Proc(
            "server",
            python_module("molecule_runtime", "serve"),
            {
                "ADAPTER_MODULE": "bench.asking_adapter",
                "LOG_LEVEL": "WARNING",
                "MOLECULE_DATA_DIR": str(work / "data"),
            },
            work,
        )
        try:
            server.start().wait_ready()
            return asyncio.run(measure(server, tasks))
        except BaseException:
            print(server.log())
            raise
        finally:
            server.stop()


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    median = statistics.median(r["kib_per_waiting_task"] for r in runs)
    return {
        "runs": runs,
        "median_kib_per_waiting_task": median,
        "target_kib_per_task": TARGET_KIB_PER_TASK,
        "verdict": "PASS" if median <= TARGET_KIB_PER_TASK else "FAIL",
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit(),
    }


def commit() -> str | None:
    """The measured code's commit, when REPO is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def write_doc(result: dict[str, Any]) -> None:
    runs = result["runs"]
    loads = "; ".join(", ".join(f"{x:g}" for x in r["load_average"]) for r in runs)
    target = result["target_kib_per_task"]
    on_commit = f" on {result['commit']}" if result.get("commit") else ""
    lines = [
        BEGIN,
        "## Tasks waiting for input (`python -m bench.waiting_memory`)",
        "",
        f"Run on {result['when']}{on_commit} ({result['cpus']} cores shared with other work, load average at the end "
        f"of each run: {loads}): a fresh server process per run, direct mode, SQLite, every task asks a "
        f"question at once; {runs[0]['warm_up_tasks']} waiting tasks warm it up, then "
        f"{runs[0]['waiting_tasks']} more are left in `input-required` and the RSS is read {SETTLE:g} s "
        "after the last one (the SDK has released their live producers and offsets). Baseline: the idle "
        f"warm server's RSS drift over {SETTLE:g} s, same process, just before. Target: ≤ {target:.2f} KiB "
        f"per waiting task ({target * 2000 / 1024:g} MiB per 2000) on the median run: "
        f"**{result['verdict']}** ({result['median_kib_per_waiting_task']:g} KiB). "
        "tests/test_waiting_memory.py keeps only a leak bound (40 MiB per 2000).",
        "",
        "| run | waiting tasks | RSS before | peak | after | growth | per task | idle drift (baseline) "
        "| warm-up, per task | time to park |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r['waiting_tasks']} | {r['rss_before_mib']} MiB | {r['rss_peak_mib']} MiB | "
            f"{r['rss_after_mib']} MiB | {r['rss_growth_mib']:+g} MiB | {r['kib_per_waiting_task']:g} KiB | "
            f"{r['idle_drift_mib']:+g} MiB | {r['warm_up_kib_per_task']:g} KiB | {r['seconds_to_park']:g} s |"
        )
    lines.append(END)
    block = "\n".join(lines)
    DOC.write_text(splice_block(DOC.read_text() if DOC.exists() else "", BEGIN, END, block))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="waiting tasks to measure (default 2000)")
    parser.add_argument("--runs", type=int, default=1, help="fresh servers to measure, one after another")
    parser.add_argument("--no-docs", action="store_true", help="print and save the JSON only")
    args = parser.parse_args()
    result = summary([run_once(args.tasks) for _ in range(args.runs)])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "waiting_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if not args.no_docs:
        write_doc(result)


if __name__ == "__main__":
    main()

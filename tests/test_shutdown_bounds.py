"""Shutdown has a time limit: a durable server whose Temporal is gone, exporting spans to
an OTLP collector that is gone too, still exits soon after SIGTERM (its Temporal workers
get MOLECULE_SHUTDOWN_GRACE, the last spans SHUTDOWN_FLUSH_SECONDS), instead of waiting
for them until it is killed (real server process, its own Temporal dev server, killed)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from molecule_runtime.observability.tracing import SHUTDOWN_FLUSH_SECONDS
from tests.support.durable import durable_env
from tests.support.procs import free_port
from tests.support.sse import A2A, aiter_sse, stream_request
from tests.support.temporal import TemporalDevServer

pytestmark = pytest.mark.temporal

GRACE = 1.0


async def test_a_durable_server_without_temporal_or_collector_exits_within_its_bounds(
    server_factory, tmp_path: Path
) -> None:
    temporal = TemporalDevServer(tmp_path / "temporal").start()
    collector = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        env = durable_env(
            temporal.address,
            tmp_path / "records",
            MOLECULE_SHUTDOWN_GRACE=str(GRACE),
            OTEL_EXPORTER_OTLP_ENDPOINT=collector,
            OTEL_BSP_SCHEDULE_DELAY="60000",  # spans wait for the flush at shutdown
        )
        server = server_factory(env)
        method, url, body = stream_request("JSONRPC", server.url, "go", {"chunks": 40, "delay": 0.2})
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream(method, url, json=body, headers=A2A) as response:
                async for _, payload in aiter_sse(response):
                    if "artifactUpdate" in payload.get("result", {}):
                        break
        temporal.kill()
    finally:
        temporal.stop()
    assert server.proc is not None
    stopping = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
    finally:
        server.kill()
    took = time.monotonic() - stopping
    # A hang bound: the grace, the workers' bound (the grace) and the flush's take ~4 s,
    # with room for a loaded machine; without the bounds the process waited 26 s and more.
    assert took < GRACE + GRACE + SHUTDOWN_FLUSH_SECONDS + 12, (took, server.log()[-3000:])


def test_a_shutdown_step_that_never_ends_cannot_keep_the_process_alive(server_factory) -> None:
    """Past every bounded step (exit_deadline: 14 s with a 1 s grace) the process is
    ended anyway, with a line saying so (without it, it waited until killed)."""
    adapter = Path(__file__).parent / "fixtures" / "stuck_close_adapter.py"
    server = server_factory({"ADAPTER_MODULE": str(adapter), "MOLECULE_SHUTDOWN_GRACE": str(GRACE)})
    assert server.proc is not None
    stopping = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=60)
    finally:
        server.kill()
    took = time.monotonic() - stopping
    assert code == 1, server.log()[-3000:]
    assert "shutdown did not finish within 14 s of the stop signal; exiting now" in server.log()
    assert took >= 13, took  # not before the deadline

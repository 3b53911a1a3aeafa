"""Durable mode losing Temporal for longer than a task may run (activity timeout x
attempts, plus MOLECULE_LOST_CONTACT_GRACE): the client's stream is not left open for
ever; it ends `failed`, marked as lost contact (real server process, its own Temporal
dev server, killed mid-task)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.durable import durable_env
from tests.support.sse import A2A, aiter_sse, state_of, stream_request
from tests.support.temporal import TemporalDevServer

pytestmark = pytest.mark.temporal


async def test_lost_contact_for_longer_than_a_task_may_run_ends_the_stream_failed(
    server_factory, tmp_path: Path
) -> None:
    temporal = TemporalDevServer(tmp_path / "temporal").start()
    try:
        env = durable_env(
            temporal.address,
            tmp_path / "records",
            TEMPORAL_ACTIVITY_TIMEOUT="2",
            TEMPORAL_MAX_ATTEMPTS="1",
            MOLECULE_LOST_CONTACT_GRACE="1",
            MOLECULE_SHUTDOWN_GRACE="1",
        )
        server = server_factory(env)
        method, url, body = stream_request("JSONRPC", server.url, "go", {"chunks": 40, "delay": 0.5})
        payloads = []
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream(method, url, json=body, headers=A2A) as response:
                async for _, payload in aiter_sse(response):
                    payloads.append(payload["result"])
                    if sum("artifactUpdate" in p for p in payloads) == 2:
                        temporal.kill()  # Temporal gone for good while the adapter streams
                        lost_at = time.monotonic()
        ended_after = time.monotonic() - lost_at
    finally:
        temporal.stop()
    # Nothing is checked of its shutdown, which waits for the Temporal that is gone
    # until the stop's grace (10 s) runs out: kill it.
    server.kill()
    last = payloads[-1]
    assert state_of(last) == "TASK_STATE_FAILED", last
    update = last["statusUpdate"]
    assert update["metadata"]["molecule.lost_contact"] is True, update
    text = "".join(p["text"] for p in update["status"]["message"]["parts"])
    assert text.startswith("Lost contact with Temporal while the task ran"), text
    # The 40-chunk answer (20 s) did not get to finish: the stream ended on the lost contact.
    assert sum("artifactUpdate" in p for p in payloads) < 40
    print({"stream_ended_after_temporal_lost_s": round(ended_after, 2)})

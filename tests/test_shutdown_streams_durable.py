"""SIGTERM while answers stream, in durable mode (real Temporal): the tasks are handed
over (another replica, or this server after its restart, finishes them), and every open
stream (JSON-RPC, HTTP+JSON, gRPC) ends with a status update that says so — `working`, not
terminal, with metadata `molecule.handed_over` (reason SERVER_SHUTTING_DOWN) — instead of
stopping on a chunk. The client follows the task on with SubscribeToTask and the last
event id it saw, and gets the rest of the answer from the restarted server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from molecule_runtime.durable.follow import HANDED_OVER, HANDED_OVER_REASON
from tests.support.durable import durable_env
from tests.support.grpc_client import grpc_env
from tests.support.sse import (
    A2A,
    aiter_sse,
    read_frames,
    state_of,
    stream_request,
    subscribe_request,
    text_of,
)
from tests.test_shutdown_streams import grpc_stream

CHUNKS = 120
SCRIPT = {"chunks": CHUNKS, "delay": 0.1}


async def http_stream(base: str, binding: str, streaming: asyncio.Event) -> list[tuple[int | None, dict]]:
    """Every (id, payload) of the stream to its end (JSON-RPC results unwrapped)."""
    method, url, body = stream_request(binding, base, "go", SCRIPT)
    frames: list[tuple[int | None, dict]] = []
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream(method, url, json=body, headers=A2A) as response:
            assert response.status_code == 200
            try:
                async for event_id, payload in aiter_sse(response):
                    payload = payload.get("result", payload)
                    frames.append((int(event_id) if event_id else None, payload))
                    if "artifactUpdate" in payload:
                        streaming.set()
            except httpx.HTTPError as exc:  # the connection cut: recorded, not raised
                frames.append((None, {"cut": repr(exc)}))
    return frames


def handed_over(payload: dict) -> None:
    update = payload.get("statusUpdate")
    assert update is not None, payload
    assert update["status"]["state"] == "TASK_STATE_WORKING", update
    text = "".join(p.get("text", "") for p in update["status"]["message"]["parts"])
    assert text.startswith("This server is shutting down; the task goes on"), text
    assert update["metadata"][HANDED_OVER]["reason"] == HANDED_OVER_REASON, update


@pytest.mark.temporal
async def test_sigterm_ends_every_durable_stream_with_the_hand_over(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    env = durable_env(
        temporal_server.address, tmp_path / "records", **grpc_env(), MOLECULE_SHUTDOWN_GRACE="3"
    )
    workdir = tmp_path / "replica"
    server = server_factory(env, workdir=workdir)
    started = {name: asyncio.Event() for name in ("JSONRPC", "HTTP+JSON", "GRPC")}
    streams = {
        "JSONRPC": asyncio.create_task(http_stream(server.url, "JSONRPC", started["JSONRPC"])),
        "HTTP+JSON": asyncio.create_task(http_stream(server.url, "HTTP+JSON", started["HTTP+JSON"])),
        "GRPC": asyncio.create_task(grpc_stream(server.url, started["GRPC"])),
    }
    async with asyncio.timeout(30):
        for event in started.values():
            await event.wait()
    await asyncio.to_thread(server.stop)  # SIGTERM, then waits for the exit
    results = {binding: await asyncio.wait_for(task, 30) for binding, task in streams.items()}
    for binding in ("JSONRPC", "HTTP+JSON"):
        frames = results[binding]
        handed_over(frames[-1][1])
    grpc_last = results["GRPC"][-1]
    assert "statusUpdate" in grpc_last, results["GRPC"][-3:]
    status = grpc_last["statusUpdate"]["status"]
    assert status["state"] == "TASK_STATE_WORKING", status
    assert status["text"].startswith("This server is shutting down; the task goes on"), status
    # The client follows the task on the restarted server from the last id it saw.
    restarted = server_factory(env, workdir=workdir, port=server.port)
    frames = results["JSONRPC"]
    task_id = frames[0][1]["task"]["id"]
    last_id = max(i for i, _ in frames if i is not None)
    async with httpx.AsyncClient(timeout=90) as http:
        rest = await read_frames(
            http, subscribe_request("JSONRPC", restarted.url, task_id), last_event_id=last_id, timeout=90
        )
    assert state_of(rest[-1][1]) == "TASK_STATE_COMPLETED", rest[-3:]
    # A retry restarts its artifact (append: false), so the rest alone holds the answer.
    assert text_of(rest) == "".join(f"c{i} " for i in range(CHUNKS))


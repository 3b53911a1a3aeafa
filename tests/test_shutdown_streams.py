"""SIGTERM while answers stream, in direct mode: every open stream (JSON-RPC, HTTP+JSON,
gRPC) ends with the task's final state, FAILED saying the server shut down, before the
server exits; no client is left with a stream that stopped on a chunk (it would show the
task working for ever). Durable mode hands such tasks over instead (tests/test_deploys.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from a2a.helpers.proto_helpers import get_message_text
from a2a.types.a2a_pb2 import SendMessageRequest, TaskState

from tests.support.durable import scripted_env, scripted_message
from tests.support.grpc_client import grpc_env, make_grpc_client
from tests.support.sse import A2A, aiter_sse, stream_request

SHUT_DOWN = "The server shut down before this task finished"
SLOW = {"chunks": 400, "delay": 0.1}


async def http_stream(base: str, binding: str, streaming: asyncio.Event) -> list[dict[str, Any]]:
    """Every payload of the stream, to its end (JSON-RPC results unwrapped)."""
    method, url, body = stream_request(binding, base, "go", SLOW)
    payloads: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream(method, url, json=body, headers=A2A) as response:
            assert response.status_code == 200
            with_suppressed_disconnect = aiter_sse(response)
            try:
                async for _, payload in with_suppressed_disconnect:
                    payloads.append(payload.get("result", payload))
                    if "artifactUpdate" in payload.get("result", payload):
                        streaming.set()
            except httpx.HTTPError as exc:  # the connection cut: recorded, not raised
                payloads.append({"cut": repr(exc)})
    return payloads


async def grpc_stream(base: str, streaming: asyncio.Event) -> list[dict[str, Any]]:
    client = await make_grpc_client(base)
    payloads: list[dict[str, Any]] = []
    try:
        async for event in client.send_message(SendMessageRequest(message=scripted_message(**SLOW))):
            if event.HasField("artifact_update"):
                streaming.set()
                payloads.append({"artifactUpdate": {}})
            elif event.HasField("status_update"):
                status = event.status_update.status
                payloads.append(
                    {
                        "statusUpdate": {
                            "status": {
                                "state": TaskState.Name(status.state),
                                "text": get_message_text(status.message),
                            }
                        }
                    }
                )
            else:
                payloads.append({event.WhichOneof("payload"): {}})
    except Exception as exc:  # the call cut: recorded, not raised
        payloads.append({"cut": repr(exc)})
    finally:
        await client.close()
    return payloads


async def test_sigterm_ends_every_direct_stream_with_the_final_state(
    server_factory, tmp_path: Path
) -> None:
    env = {**scripted_env(tmp_path / "records"), **grpc_env(), "MOLECULE_SHUTDOWN_GRACE": "3"}
    server = server_factory(env)
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
    for binding, task in streams.items():
        payloads = await asyncio.wait_for(task, 30)
        last = payloads[-1]
        assert "statusUpdate" in last, (binding, payloads[-3:])
        status = last["statusUpdate"]["status"]
        assert status["state"] == "TASK_STATE_FAILED", (binding, status)
        text = status.get("text") or "".join(
            p.get("text", "") for p in status.get("message", {}).get("parts", [])
        )
        assert text.startswith(SHUT_DOWN), (binding, text)

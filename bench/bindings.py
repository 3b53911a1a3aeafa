"""Round trip of one streamed task on each binding (JSON-RPC, REST, gRPC) of one server.

    python -m bench.bindings            # 200 tasks per binding, interleaved
    python -m bench.bindings --n 50

One direct-mode server (echo adapter, in-memory store) with MOLECULE_GRPC_PORT set; the
a2a-sdk client of each binding streams tasks one after another, bindings interleaved so
machine noise hits all of them alike. Prints median / p95 / mean of the time from sending
the message to the terminal event, per binding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import grpc.aio
import httpx
from a2a.client import ClientConfig, create_client
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest

from bench.measure import summary
from bench.procs import Proc, free_port, python_module

BINDINGS = ("JSONRPC", "HTTP+JSON", "GRPC")


async def run(n: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-bindings-") as tmp:
        env = {
            "RUNTIME": "echo",
            "TASK_STORE_URL": "memory",
            "MOLECULE_GRPC_PORT": str(free_port()),
            "MOLECULE_DATA_DIR": str(Path(tmp) / "data"),
            "LOG_LEVEL": "WARNING",
        }
        server = Proc("runtime", python_module("molecule_runtime", "serve"), env, Path(tmp))
        server.start()
        try:
            server.wait_ready()
            url = f"http://127.0.0.1:{server.port}"
            clients = {}
            for binding in BINDINGS:
                config = ClientConfig(
                    streaming=True,
                    httpx_client=httpx.AsyncClient(timeout=60),
                    supported_protocol_bindings=[binding],
                    grpc_channel_factory=grpc.aio.insecure_channel,
                )
                clients[binding] = await create_client(url, client_config=config)
            times: dict[str, list[float]] = {b: [] for b in BINDINGS}
            for i in range(n + 5):
                for binding, client in clients.items():
                    message = Message(
                        role=Role.ROLE_USER,
                        message_id=str(uuid.uuid4()),
                        parts=[Part(text="one two three")],
                    )
                    start = time.perf_counter()
                    async for _ in client.send_message(SendMessageRequest(message=message)):
                        pass
                    if i >= 5:  # the first few warm connections and caches up
                        times[binding].append((time.perf_counter() - start) * 1000)
            for client in clients.values():
                await client.close()
            return {b: summary(v) for b, v in times.items()}
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(run(args.n))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

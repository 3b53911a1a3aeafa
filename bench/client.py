"""A minimal HTTP/1.1 JSON-RPC + SSE client on raw asyncio streams.

The load generator shares two cores with the servers it measures, so it must be
cheap: one keep-alive connection per concurrent worker, no per-request object
graph (httpx costs ~1 ms of CPU per request here, comparable to what we measure).
Handles `Content-Length` and `Transfer-Encoding: chunked` responses, which is
what uvicorn sends for JSON and for SSE respectively.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"


def message_params(text: str = "bench", **metadata: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "ROLE_USER",
        "messageId": str(uuid.uuid4()),
        "parts": [{"text": text}],
    }
    if metadata:
        message["metadata"] = metadata
    return {"message": message}


def rpc_body(method: str, params: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


class HttpError(RuntimeError):
    pass


class Conn:
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def _send(self, body: bytes) -> tuple[asyncio.StreamReader, int, dict[str, str]]:
        reader, writer = await self._ensure()
        head = (
            f"POST / HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            "Content-Type: application/json\r\nA2A-Version: 1.0\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            await self.close()
            raise HttpError("connection closed by server")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return reader, status, headers

    async def _chunks(self, reader: asyncio.StreamReader, headers: dict[str, str]):
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    return
                data = await reader.readexactly(size)
                await reader.readexactly(2)
                yield data
        else:
            length = int(headers.get("content-length", "0"))
            yield await reader.readexactly(length)
        if headers.get("connection", "").lower() == "close":
            await self.close()

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A JSON-RPC call answered with one JSON body."""
        reader, status, headers = await self._send(rpc_body(method, params))
        body = b"".join([c async for c in self._chunks(reader, headers)])
        if status != 200:
            raise HttpError(f"HTTP {status}: {body[:300]!r}")
        reply = json.loads(body)
        if "error" in reply:
            raise HttpError(f"JSON-RPC error: {reply['error']}")
        return reply["result"]

    async def stream(
        self, method: str, params: dict[str, Any], on_event: Callable[[dict[str, Any]], None]
    ) -> None:
        """A JSON-RPC call answered with SSE: `on_event(result)` for every `data:` event."""
        reader, status, headers = await self._send(rpc_body(method, params))
        if status != 200:
            body = b"".join([c async for c in self._chunks(reader, headers)])
            raise HttpError(f"HTTP {status}: {body[:300]!r}")
        buffer = b""
        async for data in self._chunks(reader, headers):
            buffer = (buffer + data).replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                for line in raw.splitlines():
                    if line.startswith(b"data:"):
                        reply = json.loads(line[5:])
                        if "error" in reply:
                            raise HttpError(f"JSON-RPC error: {reply['error']}")
                        on_event(reply["result"])


@dataclass
class StreamTiming:
    """Seconds from sending the request (time.perf_counter based)."""

    first_event: float = float("nan")
    first_chunk: float = float("nan")
    end: float = float("nan")
    task_id: str = ""
    state: str = ""
    chunks: int = 0  # artifact events carrying text (the runtime may merge adapter chunks)
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The streamed answer, honouring append=false (restart) per artifact."""
        return "".join(self.artifacts.values())


async def stream_task(
    conn: Conn,
    params: dict[str, Any],
    *,
    on_first_chunk: Callable[[StreamTiming], None] | None = None,
) -> StreamTiming:
    timing = StreamTiming()
    start = time.perf_counter()

    def on_event(result: dict[str, Any]) -> None:
        now = time.perf_counter() - start
        if timing.first_event != timing.first_event:  # nan
            timing.first_event = now
        if "task" in result:
            timing.task_id = result["task"]["id"]
            timing.state = result["task"]["status"]["state"]
        elif "artifactUpdate" in result:
            update = result["artifactUpdate"]
            parts = update["artifact"].get("parts", [])
            chunk = "".join(p.get("text", "") for p in parts)
            key = update["artifact"].get("artifactId", "")
            timing.artifacts[key] = (timing.artifacts.get(key, "") + chunk) if update.get("append") else chunk
            if chunk:
                timing.chunks += 1
                if timing.chunks == 1:
                    timing.first_chunk = now
                    if on_first_chunk is not None:
                        on_first_chunk(timing)
        elif "statusUpdate" in result:
            timing.state = result["statusUpdate"]["status"]["state"]

    await conn.stream("SendStreamingMessage", params, on_event)
    timing.end = time.perf_counter() - start
    return timing


async def send_task(conn: Conn, params: dict[str, Any]) -> tuple[float, str]:
    """Blocking SendMessage: (seconds, final state)."""
    start = time.perf_counter()
    result = await conn.call("SendMessage", params)
    elapsed = time.perf_counter() - start
    task = result.get("task") or {}
    return elapsed, task.get("status", {}).get("state", "")

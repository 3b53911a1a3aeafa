"""Streaming floor: a bare Starlette + uvicorn SSE endpoint, the physical limit of relaying chunks.

    PORT=8123 python -m bench.streaming_floor [batch_window_seconds]

`POST /` takes the same JSON-RPC `SendStreamingMessage` body as the runtime
(reading `chunks` and `delay` from the message metadata) and answers with SSE
frames of the same JSON-RPC shape (a Task, artifact updates, a final status
update), so the benchmark's client runs unchanged against it. The chunks are
the streaming adapter's own tokens on the same absolute schedule, merged with
the runtime's batching rule (first chunk at once, then at most one event per
window): the same number of SSE events go over the wire as from the runtime,
and what is left is the runtime's own machinery (SDK event queue, task store,
Temporal). No task store, no a2a-sdk, nothing kept after the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from bench.streaming_adapter import token


def frame(result: dict[str, Any]) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}, separators=(",", ":"))
    return f"data: {body}\n\n".encode()


class Relay:
    """One stream: a producer on the adapter's schedule, a consumer batching like the runtime."""

    def __init__(self, chunks: int, delay: float, window: float) -> None:
        self.chunks = chunks
        self.delay = delay
        self.window = window
        self.buffer: list[str] = []
        self.done = False
        self.ready = asyncio.Event()

    async def produce(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq in range(self.chunks):
            if self.delay:
                await asyncio.sleep(max(0.0, start + (seq + 1) * self.delay - loop.time()))
            self.buffer.append(token(seq, time.time()))
            self.ready.set()
        self.done = True
        self.ready.set()

    async def batches(self) -> AsyncIterator[tuple[str, bool]]:
        """(merged text, last) per event."""
        loop = asyncio.get_running_loop()
        last_sent = float("-inf")
        while True:
            await self.ready.wait()
            self.ready.clear()
            wait = last_sent + self.window - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            text = "".join(self.buffer)
            self.buffer.clear()
            last = self.done
            if text or last:
                yield text, last
                last_sent = loop.time()
            if last:
                return


async def rpc(request: Request) -> StreamingResponse | JSONResponse:
    body = await request.json()
    message = body["params"]["message"]
    meta = message.get("metadata") or {}
    relay = Relay(int(meta.get("chunks", 500)), float(meta.get("delay", 0.02)), WINDOW)
    task_id, context_id = str(uuid.uuid4()), str(uuid.uuid4())
    artifact_id = f"{task_id}-answer"

    async def events() -> AsyncIterator[bytes]:
        producer = asyncio.create_task(relay.produce())
        try:
            yield frame({"task": {"id": task_id, "contextId": context_id,
                                  "status": {"state": "TASK_STATE_WORKING"}}})
            sent_any = False
            async for text, last in relay.batches():
                yield frame({"artifactUpdate": {
                    "taskId": task_id, "contextId": context_id,
                    "artifact": {"artifactId": artifact_id, "name": "answer", "parts": [{"text": text}]},
                    "append": sent_any, "lastChunk": last}})
                sent_any = True
            yield frame({"statusUpdate": {"taskId": task_id, "contextId": context_id,
                                          "status": {"state": "TASK_STATE_COMPLETED"}}})
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


async def readyz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ready", "kind": "streaming_floor"})


# The runtime's default STREAM_BATCH_WINDOW; the command line may set another.
WINDOW = 0.05
app = Starlette(routes=[Route("/", rpc, methods=["POST"]), Route("/readyz", readyz, methods=["GET"])])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        WINDOW = float(sys.argv[1])
    # uvicorn's defaults, like the runtime's server (which also speaks h11; no httptools here).
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning",
                access_log=False)

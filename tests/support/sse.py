"""Raw SSE over httpx: frames with their ids (offsets in the task's event log)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

A2A = {"A2A-Version": "1.0", "Content-Type": "application/json"}
TERMINAL = {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"}

Frame = tuple[int, dict[str, Any]]  # (SSE id, StreamResponse as JSON)


async def sse_frames(response: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """(id, data) of each SSE event; JSON-RPC results are unwrapped."""
    event_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                payload = json.loads("\n".join(data))
                assert "error" not in payload, payload
                yield event_id, payload.get("result", payload)
            event_id, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


def state_of(payload: dict[str, Any]) -> str | None:
    for key in ("task", "statusUpdate"):
        if key in payload:
            return payload[key]["status"]["state"]
    return None


def text_of(frames: list[Frame]) -> str:
    text = ""
    for _, payload in frames:
        update = payload.get("artifactUpdate")
        if update is not None:
            chunk = "".join(p.get("text", "") for p in update["artifact"]["parts"])
            text = text + chunk if update.get("append") else chunk
    return text


def stream_request(binding: str, base: str, text: str, metadata: dict | None = None):
    message: dict[str, Any] = {
        "role": "ROLE_USER",
        "messageId": str(uuid.uuid4()),
        "parts": [{"text": text}],
    }
    if metadata:
        message["metadata"] = metadata
    if binding == "JSONRPC":
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": {"message": message}}
        return "POST", f"{base}/", body
    return "POST", f"{base}/rest/message:stream", {"message": message}


def subscribe_request(binding: str, base: str, task_id: str):
    if binding == "JSONRPC":
        body = {"jsonrpc": "2.0", "id": 2, "method": "SubscribeToTask", "params": {"id": task_id}}
        return "POST", f"{base}/", body
    return "GET", f"{base}/rest/tasks/{task_id}:subscribe", None


async def read_frames(
    http: httpx.AsyncClient,
    request: tuple[str, str, Any],
    *,
    last_event_id: int | None = None,
    stop_after_chunks: int | None = None,
    timeout: float = 25.0,
) -> list[Frame]:
    """Frames until the stream ends (or `stop_after_chunks` artifact frames, then disconnect)."""
    method, url, body = request
    headers = dict(A2A)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    frames: list[Frame] = []
    chunks = 0
    async with asyncio.timeout(timeout):
        async with http.stream(method, url, json=body, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            async for event_id, payload in sse_frames(response):
                assert event_id is not None, payload  # every logged event carries its offset
                frames.append((int(event_id), payload))
                chunks += "artifactUpdate" in payload
                if stop_after_chunks is not None and chunks >= stop_after_chunks:
                    break  # leaving the block closes the connection mid-stream
    return frames


def task_id_of(frames: list[Frame]) -> str:
    first = frames[0][1]
    return first["task"]["id"] if "task" in first else next(iter(first.values()))["taskId"]


def assert_increasing(frames: list[Frame]) -> None:
    ids = [i for i, _ in frames]
    assert ids == sorted(set(ids)), ids

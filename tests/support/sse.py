"""Raw A2A over httpx: JSON messages, SSE frames with their ids (offsets in the task's event log)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import httpx

A2A = {"A2A-Version": "1.0", "Content-Type": "application/json"}
TERMINAL = {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"}

Frame = tuple[int, dict[str, Any]]  # (SSE id, StreamResponse as JSON)
Event = tuple[str | None, dict[str, Any]]  # (SSE id if any, the event's JSON as sent)


def message_json(
    text: str,
    *,
    context_id: str = "",
    task_id: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A user message as A2A 1.0 JSON, for tests that check the wire format themselves."""
    message: dict[str, Any] = {
        "role": "ROLE_USER",
        "messageId": str(uuid.uuid4()),
        "parts": [{"text": text}],
    }
    if context_id:
        message["contextId"] = context_id
    if task_id:
        message["taskId"] = task_id
    if metadata:
        message["metadata"] = dict(metadata)
    return message


class SseDecoder:
    """SSE framing, fed one line at a time: an event is complete at the blank line after
    it. Shared by the sync and async readers so that every test parses frames alike."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if not line:
            event = (self._id, json.loads("\n".join(self._data))) if self._data else None
            self._id, self._data = None, []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "data":
            self._data.append(value)
        return None


def sse_events(lines: Iterable[str]) -> Iterator[Event]:
    """(id, JSON) of each SSE event in `lines` (a response's `iter_lines()`, or the
    `splitlines()` of a body read whole); JSON-RPC envelopes and errors are kept."""
    decoder = SseDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


async def aiter_sse(response: httpx.Response) -> AsyncIterator[Event]:
    """`sse_events` of a streamed async response, as the events arrive."""
    decoder = SseDecoder()
    async for line in response.aiter_lines():
        event = decoder.feed(line)
        if event is not None:
            yield event


def post_sse(
    url: str, body: dict[str, Any], *, headers: Mapping[str, str], timeout: float
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """POST a streaming call without an event loop and read the stream to its end: the
    (closed) response, for its status and headers, and the JSON of every event."""
    headers = {**headers, "Accept": "text/event-stream"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
        events = [payload for _, payload in sse_events(response.iter_lines())]
    return response, events


async def sse_frames(response: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """(id, data) of each SSE event; JSON-RPC results are unwrapped."""
    async for event_id, payload in aiter_sse(response):
        assert "error" not in payload, payload
        yield event_id, payload.get("result", payload)


def state_of(payload: dict[str, Any]) -> str | None:
    for key in ("task", "statusUpdate"):
        if key in payload:
            return payload[key]["status"]["state"]
    return None


def text_of(frames: list[Frame]) -> str:
    """The answer's text as a client following the stream holds it: a Task
    snapshot (e.g. the first frame of a repeated send) replaces it, appended
    chunks add to it, a non-append chunk starts it over."""
    text = ""
    for _, payload in frames:
        if "task" in payload:
            artifacts = payload["task"].get("artifacts", [])
            text = "".join(p.get("text", "") for a in artifacts for p in a["parts"])
            continue
        update = payload.get("artifactUpdate")
        if update is not None:
            chunk = "".join(p.get("text", "") for p in update["artifact"]["parts"])
            text = text + chunk if update.get("append") else chunk
    return text


def stream_request(binding: str, base: str, text: str, metadata: dict | None = None):
    message = message_json(text, metadata=metadata)
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


async def resume_to_the_end(
    http: httpx.AsyncClient,
    binding: str,
    base: str,
    task_id: str,
    before: list[Frame],
    *,
    timeout: float = 25.0,
) -> list[Frame]:
    """Subscribe again from the last offset seen in `before` and read to the end: the new
    frames, checked to come after that offset and to end with the task completed."""
    after = await read_frames(
        http, subscribe_request(binding, base, task_id), last_event_id=before[-1][0], timeout=timeout
    )
    assert after[0][0] > before[-1][0]
    assert state_of(after[-1][1]) == "TASK_STATE_COMPLETED"
    return after


def assert_stored_prefix_then(replay: list[Frame], before: list[Frame], after: list[Frame]) -> None:
    """The log (`replay`) holds what the first process had stored, a prefix of what it
    streamed (`before`: chunks are written behind the stream), then exactly `after`."""
    stored_before = [f for f in replay if f[0] <= before[-1][0]]
    assert stored_before == before[: len(stored_before)]
    assert replay[len(stored_before) :] == after


async def get_task_json(http: httpx.AsyncClient, base: str, task_id: str) -> dict[str, Any]:
    """GetTask over raw JSON-RPC: the task as JSON (for tests that read the wire format)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": task_id}}
    payload = (await http.post(f"{base}/", json=body, headers=A2A)).json()
    assert "result" in payload, payload
    return payload["result"]


def task_id_of(frames: list[Frame]) -> str:
    first = frames[0][1]
    return first["task"]["id"] if "task" in first else next(iter(first.values()))["taskId"]


def assert_increasing(frames: list[Frame]) -> None:
    ids = [i for i, _ in frames]
    assert ids == sorted(set(ids)), ids

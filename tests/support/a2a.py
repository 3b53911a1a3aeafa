"""A2A client helpers over real HTTP (the a2a-sdk client, JSON-RPC or REST)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
from a2a.client import ClientConfig, create_client
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
)


def user_message(text: str, *, task_id: str = "", context_id: str = "") -> Message:
    return Message(
        role=Role.ROLE_USER,
        message_id=str(uuid.uuid4()),
        parts=[Part(text=text)] if text is not None else [],
        task_id=task_id,
        context_id=context_id,
    )


async def make_client(
    url: str,
    *,
    streaming: bool = True,
    token: str | None = None,
    binding: str = "JSONRPC",
) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx.AsyncClient(timeout=httpx.Timeout(60.0), headers=headers)
    config = ClientConfig(
        streaming=streaming, httpx_client=http, supported_protocol_bindings=[binding]
    )
    return await create_client(url, client_config=config)


async def stream_events(client: Client, message: Message) -> AsyncIterator[StreamResponse]:
    async for event in client.send_message(SendMessageRequest(message=message)):
        yield event


def task_text(task: Task) -> str:
    return "".join(part.text for artifact in task.artifacts for part in artifact.parts)


def event_task_id(event: StreamResponse) -> str:
    which = event.WhichOneof("payload")
    if which == "task":
        return event.task.id
    if which == "status_update":
        return event.status_update.task_id
    if which == "artifact_update":
        return event.artifact_update.task_id
    return event.message.task_id

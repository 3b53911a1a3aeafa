"""Helpers for durable-mode tests: scripted messages, the environment, streamed text."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from a2a.types.a2a_pb2 import Message
from google.protobuf.struct_pb2 import Struct

from tests.support.a2a import user_message

SCRIPTED_ADAPTER = Path(__file__).resolve().parent.parent / "fixtures" / "scripted_adapter.py"


def scripted_message(text: str = "go", **script: Any) -> Message:
    message = user_message(text)
    meta = Struct()
    meta.update(script)
    message.metadata.CopyFrom(meta)
    return message


def scripted_env(record_dir: Path, **extra: str) -> dict[str, str]:
    """The scripted adapter in direct mode, recording its executions under `record_dir`."""
    return {
        "ADAPTER_MODULE": str(SCRIPTED_ADAPTER),
        "ADAPTER_OPTIONS": json.dumps({"record_dir": str(record_dir)}),
        **extra,
    }


def own_temporal(temporal_address: str) -> dict[str, str]:
    """Durable mode on a task queue and workspace of its own, so servers sharing
    the session's dev server never take each other's workflows."""
    queue = f"q-{uuid.uuid4().hex[:10]}"
    return {
        "TEMPORAL_HOST": temporal_address,
        "TEMPORAL_TASK_QUEUE": queue,
        "WORKSPACE_ID": f"ws-{queue}",
    }


def durable_env(temporal_address: str, record_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **own_temporal(temporal_address),
        **scripted_env(record_dir),
        "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
        "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.2",
        "TEMPORAL_SCHEDULE_TO_START_TIMEOUT": "3",
        "TEMPORAL_CONNECT_TIMEOUT": "2",
    }
    env.update(extra)
    return env


def streamed_text(events: list) -> str:
    """Reassemble the answer as a client following the stream holds it: a Task
    snapshot (e.g. the first event of a repeated send) replaces it, artifact
    events append to it, append=false (a restart) starts it over."""
    text = ""
    for event in events:
        if event.WhichOneof("payload") == "task":
            text = "".join(p.text for a in event.task.artifacts for p in a.parts)
            continue
        if event.WhichOneof("payload") != "artifact_update":
            continue
        update = event.artifact_update
        chunk = "".join(p.text for p in update.artifact.parts)
        text = text + chunk if update.append else chunk
    return text


async def readyz(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(url + "/readyz")

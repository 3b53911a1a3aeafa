"""Push notifications over real HTTP: a webhook receiver on 127.0.0.1 gets every
state change with its token, failing webhooks are retried, private addresses
are refused unless MOLECULE_PUSH_ALLOW_PRIVATE, headless recovery pushes too."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import (
    SendMessageConfiguration,
    SendMessageRequest,
    TaskPushNotificationConfig,
    TaskState,
)

from molecule_runtime.push_policy import WebhookPolicy
from tests.support.a2a import make_client, user_message, wait_terminal
from tests.support.durable import durable_env, scripted_message
from tests.support.sse import A2A, TERMINAL, sse_events, state_of

TOKEN = "webhook-secret-123"


class Receiver:
    """A webhook on 127.0.0.1 recording every request; fails the first `fail_first` with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = 500 if len(receiver.requests) < receiver.fail_first else 200
                    receiver.requests.append((status, dict(self.headers), json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for status, _, body in self.requests if status == 200]

    def states(self) -> list[str]:
        return [state for body in self.delivered() if (state := state_of(body)) is not None]

    async def wait_for_terminal(self, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not (self.states() and self.states()[-1] in TERMINAL):
            assert time.monotonic() < deadline, self.requests
            await asyncio.sleep(0.05)
        return self.states()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()


PUSH_ENV = {
    "RUNTIME": "echo",
    "ADAPTER_OPTIONS": '{"delay": 0.02}',
    "MOLECULE_PUSH_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
    "MOLECULE_PUSH_RETRY_INITIAL_INTERVAL": "0.1",
}


def push_config(url: str) -> SendMessageConfiguration:
    return SendMessageConfiguration(
        task_push_notification_config=TaskPushNotificationConfig(url=url, token=TOKEN)
    )


async def replayed_states(base: str, task_id: str) -> list[str]:
    """The state changes in the task's event log (the source of truth)."""
    states: list[str] = []
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(
            f"{base}/rest/tasks/{task_id}:subscribe", headers={**A2A, "Last-Event-ID": "0"}
        )
    for _, payload in sse_events(response.text.splitlines()):
        state = state_of(payload)
        if state is not None:
            states.append(state)
    return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


async def test_every_state_change_reaches_the_webhook_with_its_token(
    server_factory, receiver: Receiver
) -> None:
    server = server_factory(PUSH_ENV)
    async with httpx.AsyncClient() as http:
        card = (await http.get(f"{server.url}/.well-known/agent-card.json")).json()
    assert card["capabilities"]["pushNotifications"] is True
    client = await make_client(server.url, streaming=False)
    try:
        request = SendMessageRequest(message=user_message("hello push"), configuration=push_config(receiver.url))
        task = (await anext(client.send_message(request))).task
        states = await receiver.wait_for_terminal()
        assert states[-1] == "TASK_STATE_COMPLETED"
        assert states == await replayed_states(server.url, task.id)
        for _, headers, body in receiver.requests:
            assert headers["X-A2A-Notification-Token"] == TOKEN
            assert (body.get("task") or body.get("statusUpdate"))["contextId"] == task.context_id
        assert not any("artifactUpdate" in body for body in receiver.delivered())
    finally:
        await client.close()


async def test_failing_webhook_is_retried_until_delivered(server_factory, receiver: Receiver) -> None:
    receiver.fail_first = 2  # 500, 500, then 200
    server = server_factory(PUSH_ENV)
    client = await make_client(server.url, streaming=False)
    try:
        request = SendMessageRequest(message=user_message("retry me"), configuration=push_config(receiver.url))
        task = (await anext(client.send_message(request))).task
        states = await receiver.wait_for_terminal()
        assert states == await replayed_states(server.url, task.id)
        statuses = [status for status, _, _ in receiver.requests]
        assert statuses[:3] == [500, 500, 200]
        # The first notification was the one retried: same body three times.
        assert receiver.requests[0][2] == receiver.requests[1][2] == receiver.requests[2][2]
    finally:
        await client.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",  # a name: every address it resolves to is checked
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "ftp://example.com/hook",
    ],
)
async def test_private_webhook_urls_are_refused_by_default(url: str) -> None:
    assert not await WebhookPolicy(allow_private=False).validate(url)
    if url.startswith("http"):
        assert await WebhookPolicy(allow_private=True).validate(url)


async def test_private_webhook_is_refused_by_the_server(server_factory, receiver: Receiver) -> None:
    server = server_factory({"RUNTIME": "echo"})
    client = await make_client(server.url, streaming=False)
    try:
        request = SendMessageRequest(message=user_message("nope"), configuration=push_config(receiver.url))
        with pytest.raises(Exception, match=r"(?i)invalid push notification url"):
            [e async for e in client.send_message(request)]
        task = (await anext(client.send_message(SendMessageRequest(message=user_message("hi"))))).task
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{server.url}/rest/tasks/{task.id}/pushNotificationConfigs",
                headers=A2A,
                json={"taskId": task.id, "url": receiver.url, "token": TOKEN},
            )
        assert response.status_code == 400, response.text
        await asyncio.sleep(0.3)
        assert receiver.requests == []
    finally:
        await client.close()


async def test_push_can_be_switched_off(server_factory) -> None:
    server = server_factory({"RUNTIME": "echo", "MOLECULE_PUSH_NOTIFICATIONS": "false"})
    async with httpx.AsyncClient(timeout=10) as http:
        card = (await http.get(f"{server.url}/.well-known/agent-card.json")).json()
        assert card["capabilities"].get("pushNotifications", False) is False
        response = await http.get(f"{server.url}/rest/tasks/x/pushNotificationConfigs", headers=A2A)
        assert response.status_code >= 400 and "push" in response.text.lower()


@pytest.mark.temporal
async def test_task_finished_headless_after_a_crash_is_pushed(
    temporal_server, server_factory, receiver: Receiver, tmp_path: Path
) -> None:
    env = durable_env(
        temporal_server.address, tmp_path / "records", MOLECULE_PUSH_ALLOW_PRIVATE="true"
    )
    workdir = tmp_path / "crash"
    server = server_factory(env, workdir=workdir)
    client = await make_client(server.url)
    message = scripted_message(chunks=20, delay=0.1)
    stream = client.send_message(SendMessageRequest(message=message, configuration=push_config(receiver.url)))
    first = await anext(stream)
    task_id = first.task.id
    deadline = time.monotonic() + 20
    while "TASK_STATE_WORKING" not in receiver.states():
        assert time.monotonic() < deadline, receiver.requests
        await asyncio.sleep(0.05)
    server.kill()
    with pytest.raises(Exception):  # noqa: B017 - the connection dies with the server
        async for _ in stream:
            pass
    await client.close()

    restarted = server_factory(env, workdir=workdir, port=server.port)
    states = await receiver.wait_for_terminal(timeout=40)
    assert states[-1] == "TASK_STATE_COMPLETED"
    assert all(headers["X-A2A-Notification-Token"] == TOKEN for _, headers, _ in receiver.requests)
    client2 = await make_client(restarted.url)
    try:
        task = await wait_terminal(client2, task_id)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        # The retry's own status ("Retrying: attempt 2 …") was pushed by the restarted process.
        assert any(
            "Retrying" in "".join(p.get("text", "") for p in body["statusUpdate"]["status"].get("message", {}).get("parts", []))
            for body in receiver.delivered()
            if "statusUpdate" in body
        )
    finally:
        await client2.close()


async def test_push_with_the_in_memory_store(server_factory, receiver: Receiver) -> None:
    server = server_factory({**PUSH_ENV, "TASK_STORE_URL": "memory"})
    client = await make_client(server.url, streaming=False)
    try:
        request = SendMessageRequest(message=user_message("memory"), configuration=push_config(receiver.url))
        await anext(client.send_message(request))
        assert await receiver.wait_for_terminal() == ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]
    finally:
        await client.close()

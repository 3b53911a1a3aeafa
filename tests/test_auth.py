"""MOLECULE_AUTH_TOKEN: every A2A route needs the bearer token; the card and health stay public."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from a2a.types.a2a_pb2 import SendMessageRequest, TaskState

from tests.support.a2a import make_client, task_text, user_message
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json, post_sse, state_of

TOKEN = "s3cret-token-for-tests"
A2A = {"A2A-Version": "1.0"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("auth"), {"MOLECULE_AUTH_TOKEN": TOKEN}) as server:
        yield server


def send_body(method: str = "SendMessage") -> dict:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": method,
        "params": {"message": message_json("hi")},
    }


# Each A2A route, as (method, path, json body or None, extra headers).
ROUTES = [
    pytest.param("POST", "/", send_body(), {}, id="jsonrpc-send"),
    pytest.param(
        "POST",
        "/",
        send_body("SendStreamingMessage"),
        {"Accept": "text/event-stream"},
        id="jsonrpc-sse",
    ),
    pytest.param(
        "POST",
        "/",
        {"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": "x"}},
        {},
        id="jsonrpc-get",
    ),
    pytest.param("POST", "/rest/message:send", send_body()["params"], {}, id="rest-send"),
    pytest.param(
        "POST",
        "/rest/message:stream",
        send_body()["params"],
        {"Accept": "text/event-stream"},
        id="rest-sse",
    ),
    pytest.param("GET", "/rest/tasks", None, {}, id="rest-list"),
    pytest.param("GET", "/rest/tasks/some-id", None, {}, id="rest-get"),
    pytest.param("POST", "/v1/message:send", send_body()["params"], {}, id="unknown-path"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN, "Bearer"],
    ids=["none", "wrong", "basic", "suffix", "no-scheme", "empty"],
)
def test_rejected_without_the_token(
    secured: ServerProcess,
    method: str,
    path: str,
    body: dict | None,
    headers: dict,
    authorization: str | None,
) -> None:
    sent = {**A2A, **headers}
    if authorization is not None:
        sent["Authorization"] = authorization
    response = httpx.request(method, secured.url + path, json=body, headers=sent, timeout=10)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    if path == "/":
        # A JSON-RPC error object (the JS SDK reads any `error` key there as one).
        assert response.json()["jsonrpc"] == "2.0" and response.json()["id"] is None
        assert error["code"] == -32040 and error["data"]["reason"] == "UNAUTHENTICATED"
    else:
        # AIP-193, as HTTP+JSON answers every error.
        assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED"
    assert "Bearer" in error["message"]
    assert TOKEN not in response.text


@pytest.mark.parametrize("path", ["/.well-known/agent-card.json", "/healthz", "/readyz"])
def test_public_paths(secured: ServerProcess, path: str) -> None:
    assert httpx.get(secured.url + path, timeout=5).status_code == 200


def test_card_declares_bearer_scheme(secured: ServerProcess) -> None:
    card = httpx.get(secured.url + "/.well-known/agent-card.json", timeout=5).json()
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert card["securityRequirements"] == [{"schemes": {"bearer": {}}}]
    assert TOKEN not in str(card)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_raw_calls_with_the_token(secured: ServerProcess, scheme: str) -> None:
    auth = {**A2A, "Authorization": f"{scheme} {TOKEN}"}
    reply = httpx.post(secured.url + "/", json=send_body(), headers=auth, timeout=10).json()
    assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    rest = httpx.post(
        secured.url + "/rest/message:send", json=send_body()["params"], headers=auth, timeout=10
    )
    assert rest.status_code == 200, rest.text
    assert rest.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    sse, events = post_sse(
        secured.url + "/", send_body("SendStreamingMessage"), headers=auth, timeout=10
    )
    assert sse.status_code == 200
    assert state_of(events[-1].get("result", {})) == "TASK_STATE_COMPLETED"


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_sdk_client_with_the_token(secured: ServerProcess, binding: str) -> None:
    client = await make_client(secured.url, token=TOKEN, binding=binding)
    try:
        events = [
            e
            async for e in client.send_message(
                SendMessageRequest(message=user_message("authorised"))
            )
        ]
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    finally:
        await client.close()


async def test_sdk_client_without_the_token_fails(secured: ServerProcess) -> None:
    client = await make_client(secured.url, streaming=False)
    try:
        with pytest.raises(Exception, match="401"):
            [e async for e in client.send_message(SendMessageRequest(message=user_message("x")))]
    finally:
        await client.close()


async def test_auth_off_needs_no_token(server_factory) -> None:
    server = server_factory()
    async with httpx.AsyncClient(timeout=10) as http:
        reply = (await http.post(server.url + "/", json=send_body(), headers=A2A)).json()
        card = (await http.get(server.url + "/.well-known/agent-card.json")).json()
    assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert "securitySchemes" not in card
    client = await make_client(server.url, streaming=False)
    try:
        responses = [
            r async for r in client.send_message(SendMessageRequest(message=user_message("open")))
        ]
        assert task_text(responses[0].task) == "open"
    finally:
        await client.close()

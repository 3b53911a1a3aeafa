"""Per-principal limits under a burst, over real HTTP: the refused get a retryable
429 (REST) / -32000 (JSON-RPC) with Retry-After, the accepted all complete, and
another principal is not held back."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx

from tests.support.sse import message_json

KEY_A = "alice-" + uuid.uuid4().hex
KEY_B = "bob-" + uuid.uuid4().hex
V1 = {"A2A-Version": "1.0"}
KEYS = f"alice:{KEY_A},bob:{KEY_B}"
# 40 words, 0.1 s each: every accepted task still runs when the burst is over.
TEXT = " ".join(f"w{i}" for i in range(40))


def auth(key: str) -> dict[str, str]:
    return {**V1, "Authorization": f"Bearer {key}"}


async def rest_send(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post("/rest/message:send", json={"message": message_json(TEXT)}, headers=auth(key))


async def rpc_send(http: httpx.AsyncClient, key: str, request_id: int) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "SendMessage",
        "params": {"message": message_json(TEXT)},
    }
    return await http.post("/", json=body, headers=auth(key))


async def test_concurrent_tasks_per_principal(server_factory) -> None:
    server = server_factory(
        {
            "RUNTIME": "echo",
            "ADAPTER_OPTIONS": json.dumps({"delay": 0.1}),
            "MOLECULE_API_KEYS": KEYS,
            "MOLECULE_PRINCIPAL_MAX_TASKS": "2",
        }
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        burst = [rest_send(http, KEY_A) for _ in range(3)] + [
            rpc_send(http, KEY_A, i) for i in range(3)
        ]
        replies, other = await asyncio.gather(asyncio.gather(*burst), rest_send(http, KEY_B))
    assert other.status_code == 200 and other.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    accepted, refused = [], []
    for reply in replies:
        payload = reply.json()
        if reply.status_code == 429 or "error" in payload:
            refused.append(reply)
        else:
            accepted.append(payload)
    assert len(accepted) == 2, [r.text for r in refused]
    for payload in accepted:
        task = payload.get("task") or payload["result"]["task"]
        assert task["status"]["state"] == "TASK_STATE_COMPLETED"
        assert "".join(p["text"] for a in task["artifacts"] for p in a["parts"]) == TEXT
    for reply in refused:
        assert int(reply.headers["retry-after"]) >= 1
        error = reply.json()["error"]
        if reply.status_code == 429:  # REST
            assert error["status"] == "RESOURCE_EXHAUSTED"
        else:  # JSON-RPC
            assert reply.status_code == 200 and error["code"] == -32000
            assert reply.json()["id"] in (0, 1, 2)
        info = error.get("details") or error.get("data")
        assert info[0]["reason"] == "PRINCIPAL_TASK_LIMIT"
        assert info[0]["metadata"]["maxTasksPerPrincipal"] == "2"
        assert "MOLECULE_PRINCIPAL_MAX_TASKS" in error["message"]
    # Nothing was created for the refused: alice has exactly her two tasks.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        listed = await http.get("/rest/tasks", headers=auth(KEY_A))
    assert len(listed.json()["tasks"]) == 2


async def test_requests_per_minute_per_principal(server_factory) -> None:
    server = server_factory(
        {
            "RUNTIME": "echo",
            "MOLECULE_API_KEYS": KEYS,
            "MOLECULE_PRINCIPAL_REQUESTS_PER_MINUTE": "5",
        }
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        rest = await asyncio.gather(*[http.get("/rest/tasks", headers=auth(KEY_A)) for _ in range(8)])
        body = {"jsonrpc": "2.0", "id": "q-1", "method": "ListTasks", "params": {}}
        rpc = await http.post("/", json=body, headers=auth(KEY_A))
        other = await http.get("/rest/tasks", headers=auth(KEY_B))
    codes = sorted(r.status_code for r in rest)
    assert codes == [200] * 5 + [429] * 3
    for reply in rest:
        if reply.status_code == 429:
            assert 1 <= int(reply.headers["retry-after"]) <= 13
            error = reply.json()["error"]
            assert error["status"] == "RESOURCE_EXHAUSTED"
            assert error["details"][0]["reason"] == "PRINCIPAL_RATE_LIMIT"
    assert rpc.status_code == 200 and rpc.headers["retry-after"]
    assert rpc.json()["id"] == "q-1"
    assert rpc.json()["error"]["code"] == -32000
    assert rpc.json()["error"]["data"][0]["reason"] == "PRINCIPAL_RATE_LIMIT"
    assert other.status_code == 200


async def test_refusals_are_counted_by_reason(server_factory) -> None:
    server = server_factory(
        {"RUNTIME": "echo", "MOLECULE_API_KEYS": KEYS, "MOLECULE_PRINCIPAL_REQUESTS_PER_MINUTE": "2"}
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        codes = [(await http.get("/rest/tasks", headers=auth(KEY_A))).status_code for _ in range(4)]
        metrics = (await http.get("/metrics")).text
    assert codes == [200, 200, 429, 429]
    assert 'molecule_principal_refused_total{reason="PRINCIPAL_RATE_LIMIT"} 2.0' in metrics

"""A running server through PostgreSQL outages, in direct and durable mode: a
restart, a port that answers 57P03 ("the database system is starting up") for
a few seconds, the database gone for 20 s. Tasks streaming meanwhile complete
with their exact text and one adapter attempt each; new sends during the
outage are refused with a retryable error that names no host, port or driver;
the log says once that the store went away and once that it is back.

PostgreSQL is a cluster of this module's own, behind tests/support/pg_proxy.py.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskState,
)
from google.rpc import error_details_pb2, status_pb2

from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import make_client, stream_events, task_text, user_message
from tests.support.durable import durable_env, scripted_env, scripted_message
from tests.support.grpc_client import grpc_env
from tests.support.pg_proxy import PgProxy
from tests.support.postgres import PASSWORD, PostgresServer, find_bindir
from tests.support.sse import message_json
from tests.support.temporal import TemporalDevServer

TASKS = 12
CHUNKS = 40
DELAY = 0.05  # 2 s of streaming per task
A2A = {"A2A-Version": "1.0"}


def expected(label: str) -> str:
    return "".join(f"{label}{i} " for i in range(CHUNKS))


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresServer]:
    """A cluster of this module's own: its tests stop and restart it."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found: run scripts/ensure-postgres.sh")
    pg = PostgresServer(bindir).start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
async def proxy(own_pg: PostgresServer) -> AsyncIterator[PgProxy]:
    served = await PgProxy(own_pg.port).start()
    try:
        yield served
    finally:
        await served.aclose()


def server_env(mode: str, url: str, records: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if mode == "direct":
        return {**scripted_env(records), **grpc_env(), "TASK_STORE_URL": url}
    temporal: TemporalDevServer = request.getfixturevalue("temporal_server")
    return {
        **durable_env(temporal.address, records),
        "TASK_STORE_URL": url,
        "TEMPORAL_MAX_ATTEMPTS": "3",
    }


async def stream_task(url: str, label: str, sink: dict[str, Any]) -> None:
    """Stream one task as a client would: a retryable refusal (the store is away
    before the task was created) is answered by sending the same message again."""
    client = await make_client(url)
    message = scripted_message("go", chunks=CHUNKS, delay=DELAY, label=label)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                async for event in stream_events(client, message):
                    kind = event.WhichOneof("payload")
                    if "id" not in sink and kind == "task":
                        sink["id"] = event.task.id
                    elif "id" not in sink and kind == "status_update":
                        sink["id"] = event.status_update.task_id
                return
            except Exception as exc:
                refused = "-32000" in str(exc) and "task store is unavailable" in str(exc)
                if "id" in sink or not refused or time.monotonic() > deadline:
                    # Cut after it was taken: GetTask tells the outcome.
                    sink["error"] = f"{type(exc).__name__}: {exc}"
                    return
                sink["refused"] = sink.get("refused", 0) + 1
                await asyncio.sleep(2)
    finally:
        await client.close()


def assert_refusal_is_clean(text: str, proxy_port: int, pg_port: int) -> None:
    for secret in (str(proxy_port), str(pg_port), "127.0.0.1", "asyncpg", "sqlalchemy", PASSWORD):
        assert secret not in text, (secret, text)


async def grpc_send_refused(grpc_port: str) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = a2a_pb2_grpc.A2AServiceStub(channel)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(
                SendMessageRequest(
                    message=user_message("during"),
                    configuration=SendMessageConfiguration(return_immediately=True),
                ),
                metadata=(("a2a-version", "1.0"),),
                timeout=30,
            )
    finally:
        await channel.close()
    error = refused.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    trailing = dict(error.trailing_metadata() or ())
    assert trailing["retry-after"].isdigit()
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "STORE_UNAVAILABLE", status
    assert "127.0.0.1" not in (error.details() or "")


async def new_sends_refused(
    base: str, proxy_port: int, pg_port: int, grpc_port: str | None = None, running: str = ""
) -> dict[str, Any]:
    """A REST, a JSON-RPC (and a gRPC) send during the outage: retryable refusals.
    GetTask of a running task: the task as it is (never failed), or the same refusal."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        if running:
            got = await http.post(
                "/",
                json={"jsonrpc": "2.0", "id": "g1", "method": "GetTask", "params": {"id": running}},
                headers=A2A,
            )
            answer = got.json()
            if "error" in answer:
                assert answer["error"]["code"] == -32000, answer
                assert_refusal_is_clean(got.text, proxy_port, pg_port)
            else:
                assert answer["result"]["status"]["state"] != "TASK_STATE_FAILED", answer
        params = {"message": message_json("during"), "configuration": {"returnImmediately": True}}
        rest = await http.post("/rest/message:send", json=params, headers=A2A)
        rpc = await http.post(
            "/",
            json={"jsonrpc": "2.0", "id": "r1", "method": "SendMessage", "params": params},
            headers=A2A,
        )
        ready = await http.get("/readyz")
    assert rest.status_code == 503, rest.text
    assert int(rest.headers["retry-after"]) >= 1
    error = rest.json()["error"]
    assert error["status"] == "UNAVAILABLE" and "task store is unavailable" in error["message"]
    assert_refusal_is_clean(rest.text, proxy_port, pg_port)
    assert rpc.status_code == 200 and rpc.json()["error"]["code"] == -32000, rpc.text
    assert "retry-after" in rpc.headers
    assert_refusal_is_clean(rpc.text, proxy_port, pg_port)
    assert ready.status_code == 503 and ready.json()["store"].startswith("cannot write"), ready.text
    if grpc_port is not None:
        await grpc_send_refused(grpc_port)
    return {"rest": rest.status_code, "rpc": rpc.json()["error"]["code"], "ready": ready.json()["store"]}


async def until_ready(server) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            assert server.proc.poll() is None, server.log()
            try:
                if (await http.get(server.url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.log()
            await asyncio.sleep(0.1)


async def until_refused(base: str) -> None:
    """Until /readyz says the store cannot write (the outage has been noticed)."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=10) as http:
        while (await http.get(base + "/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "/readyz never noticed the outage"
            await asyncio.sleep(0.1)


async def run_outage(
    mode: str,
    outage: str,
    own_pg: PostgresServer,
    proxy: PgProxy,
    server_factory,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    records = tmp_path / "records"
    url = proxy.url(own_pg.database(), own_pg.port)
    # Not the factory's wait: it blocks this event loop, which serves the proxy.
    server = server_factory(
        server_env(mode, url, records, request), workdir=tmp_path / "srv", wait=False
    )
    await until_ready(server)
    sinks: list[dict[str, Any]] = [{} for _ in range(TASKS)]
    labels = [f"t{i}-{uuid.uuid4().hex[:4]}-" for i in range(TASKS)]
    streams = [asyncio.create_task(stream_task(server.url, labels[i], sinks[i])) for i in range(TASKS)]
    # The outage starts once every task was taken and streams.
    deadline = time.monotonic() + 30
    while not all("id" in sink for sink in sinks):
        assert time.monotonic() < deadline, sinks
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)

    started = time.monotonic()
    if outage == "starting_up":
        await proxy.set_mode("starting_up")
        await until_refused(server.url)
        await new_sends_refused(
            server.url,
            proxy.port,
            own_pg.port,
            server.env.get("MOLECULE_GRPC_PORT"),
            running=sinks[0]["id"],
        )
        await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - started)))
        await proxy.set_mode("forward")
    elif outage == "restart":
        await asyncio.to_thread(own_pg.stop, remove=False)
        await asyncio.sleep(3.0)
        await asyncio.to_thread(own_pg.start)
    else:  # down for 20 s
        await asyncio.to_thread(own_pg.stop, remove=False)
        await until_refused(server.url)
        await new_sends_refused(server.url, proxy.port, own_pg.port, running=sinks[0]["id"])
        await asyncio.sleep(max(0.0, 20.0 - (time.monotonic() - started)))
        await asyncio.to_thread(own_pg.start)

    await asyncio.wait_for(asyncio.gather(*streams), 180)
    client = await make_client(server.url)
    try:
        for sink, label in zip(sinks, labels, strict=True):
            assert "id" in sink, sink
            deadline = time.monotonic() + 120
            while True:
                try:
                    task = await client.get_task(GetTaskRequest(id=sink["id"]))
                except Exception:
                    task = None
                if task is not None and task.status.state == TaskState.TASK_STATE_COMPLETED:
                    break
                assert time.monotonic() < deadline, (sink, task)
                await asyncio.sleep(0.2)
            assert task_text(task) == expected(label), (sink, task_text(task))
            starts = [r for r in read_records(records, sink["id"]) if r["event"] == "start"]
            # One adapter run per task, and it was the first attempt: no attempt was
            # spent on the outage (one failed before the adapter ran would make it 2).
            assert [r["attempt"] for r in starts] == [1], (sink["id"], starts)
    finally:
        await client.close()
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(server.url + "/readyz")).status_code == 200
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 :][:6000]
    assert len(re.findall(r"task store unavailable", log)) >= 1, log[-4000:]
    assert len(re.findall(r"task store is back", log)) >= 1, log[-4000:]
    assert PASSWORD not in log
    # Stopped here, while this loop still serves the proxy its shutdown writes go through.
    await asyncio.to_thread(server.stop)


@pytest.mark.parametrize("mode", ["direct", pytest.param("durable", marks=pytest.mark.temporal)])
async def test_a_57p03_window_costs_time_not_tasks(
    mode: str, own_pg, proxy, server_factory, tmp_path: Path, request
) -> None:
    await run_outage(mode, "starting_up", own_pg, proxy, server_factory, tmp_path, request)


@pytest.mark.parametrize("mode", ["direct", pytest.param("durable", marks=pytest.mark.temporal)])
async def test_a_postgresql_restart_costs_time_not_tasks(
    mode: str, own_pg, proxy, server_factory, tmp_path: Path, request
) -> None:
    await run_outage(mode, "restart", own_pg, proxy, server_factory, tmp_path, request)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["direct", pytest.param("durable", marks=pytest.mark.temporal)])
async def test_postgresql_down_for_20_s_costs_time_not_tasks(
    mode: str, own_pg, proxy, server_factory, tmp_path: Path, request
) -> None:
    await run_outage(mode, "down", own_pg, proxy, server_factory, tmp_path, request)

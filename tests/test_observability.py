"""One trace per task across HTTP and Temporal; Prometheus metrics; task-aware logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import httpx
import pytest
from a2a.types.a2a_pb2 import TaskState

from tests.support.a2a import make_client, stream_events, wait_terminal
from tests.support.durable import durable_env, scripted_message
from tests.support.otlp import OtlpReceiver
from tests.support.sse import aiter_sse

STAGES = {"task_receive", "llm_call", "task_complete"}
OTEL_FAST = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "molecule-test"}


def _traceparent() -> tuple[str, str]:
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


async def _send(url: str, traceparent: str, metadata: dict | None = None) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendStreamingMessage",
        "params": {
            "message": {
                "role": "ROLE_USER",
                "messageId": os.urandom(8).hex(),
                "parts": [{"text": "trace me"}],
                "metadata": metadata or {},
            }
        },
    }
    task_id = ""
    headers = {"A2A-Version": "1.0", "traceparent": traceparent}
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream("POST", url + "/", json=body, headers=headers) as response,
    ):
        async for _, payload in aiter_sse(response):
            if not task_id:
                task_id = payload["result"]["task"]["id"]
    return task_id


async def _wait_spans(receiver: OtlpReceiver, trace_id: str, names: set[str], timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = receiver.in_trace(trace_id)
        if names <= {s.name for s in spans}:
            return spans
        await asyncio.sleep(0.1)
    raise AssertionError(f"spans {names} not all in trace {trace_id}: {receiver.in_trace(trace_id)}")


async def test_direct_mode_one_trace(server_factory, tmp_path) -> None:
    with OtlpReceiver() as receiver:
        server = server_factory(
            {**OTEL_FAST, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        )
        trace_id, traceparent = _traceparent()
        task_id = await _send(server.url, traceparent)
        spans = await _wait_spans(receiver, trace_id, STAGES)
        by_name = {s.name: s for s in spans if s.name in STAGES}
        for span in by_name.values():
            assert span.attributes["a2a.task.id"] == task_id
            assert span.attributes["molecule.mode"] == "direct"
            assert span.attributes["molecule.adapter"] == "echo"
            assert span.attributes["molecule.workspace_id"] == "workspace-default"
            assert span.service == "molecule-test"
        # The HTTP server span continues the caller's trace.
        caller_span = traceparent.split("-")[2]
        deadline = time.monotonic() + 10
        while not any(s.parent_span_id == caller_span for s in receiver.in_trace(trace_id)):
            assert time.monotonic() < deadline, [
                (s.name, s.parent_span_id) for s in receiver.in_trace(trace_id)
            ]
            await asyncio.sleep(0.1)
        server.stop()  # while the receiver listens: see test_json_logs_carry_task_and_trace_ids


@pytest.mark.temporal
async def test_durable_mode_one_trace_across_temporal_with_retry(
    temporal_server, server_factory, tmp_path
) -> None:
    with OtlpReceiver() as receiver:
        env = durable_env(
            temporal_server.address,
            tmp_path / "records",
            **OTEL_FAST,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        )
        server = server_factory(env)
        trace_id, traceparent = _traceparent()
        task_id = await _send(server.url, traceparent, {"chunks": 2, "fail_attempts": 1})
        spans = await _wait_spans(receiver, trace_id, STAGES | {"StartWorkflow:AgentTaskWorkflow"})
        llm_calls = [s for s in spans if s.name == "llm_call"]
        deadline = time.monotonic() + 10
        while len(llm_calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            llm_calls = [s for s in receiver.in_trace(trace_id) if s.name == "llm_call"]
        assert sorted(s.attributes["molecule.attempt"] for s in llm_calls) == [1, 2]
        failed = next(s for s in llm_calls if s.attributes["molecule.attempt"] == 1)
        assert failed.status_code == 2  # STATUS_CODE_ERROR
        for span in spans:
            if span.name in STAGES:
                assert span.attributes["a2a.task.id"] == task_id
                assert span.attributes["molecule.mode"] == "durable"
        assert {s.name for s in spans} >= {"RunWorkflow:AgentTaskWorkflow", "RunActivity:llm_call"}
        server.stop()  # while the receiver listens: see test_json_logs_carry_task_and_trace_ids


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)$", line)
        if not match:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def test_metrics_move_as_tasks_run(server_factory) -> None:
    server = server_factory({"ADAPTER_OPTIONS": json.dumps({"delay": 0.01})})
    async with httpx.AsyncClient() as http:
        before = (await http.get(server.url + "/metrics")).text
    client = await make_client(server.url)
    for _ in range(3):
        events = [e async for e in stream_events(client, scripted_message("a b c"))]
        await wait_terminal(client, events[0].task.id)
    async with httpx.AsyncClient() as http:
        response = await http.get(server.url + "/metrics")
    after = response.text
    assert response.headers["content-type"].startswith("text/plain")
    completed = "molecule_tasks_total"
    assert _metric(after, completed, state="completed", mode="direct") - _metric(
        before, completed, state="completed", mode="direct"
    ) == 3
    assert _metric(after, "molecule_task_duration_seconds_count", mode="direct") >= 3
    assert _metric(after, "molecule_time_to_first_chunk_seconds_count", mode="direct") >= 3
    assert _metric(after, "molecule_tasks_in_flight", mode="direct") == 0
    assert "molecule_fallbacks_total" in after and "molecule_temporal_connected" in after
    await client.close()


async def test_no_otel_means_nothing_exported_and_no_error(server_factory) -> None:
    env = {k: "" for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")}
    server = server_factory(env)
    client = await make_client(server.url)
    events = [e async for e in stream_events(client, scripted_message("hello"))]
    task = await wait_terminal(client, events[0].task.id)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    await client.close()
    log = server.log()
    assert "exporting spans" not in log
    assert "ERROR" not in log and "Traceback" not in log


async def test_json_logs_carry_task_and_trace_ids(server_factory, tmp_path) -> None:
    adapter = tmp_path / "failing.py"
    adapter.write_text(
        "from molecule_runtime.adapters import BaseAdapter\n"
        "class Adapter(BaseAdapter):\n"
        "    @staticmethod\n"
        "    def name():\n"
        "        return 'failing'\n"
        "    async def stream(self, task):\n"
        "        yield 'x'\n"
        "        raise RuntimeError('adapter exploded')\n"
    )
    with OtlpReceiver() as receiver:
        server = server_factory(
            {
                "ADAPTER_MODULE": str(adapter),
                "LOG_FORMAT": "json",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            }
        )
        trace_id, traceparent = _traceparent()
        task_id = await _send(server.url, traceparent)
        # Stopped while the receiver listens: the exporter's flush at shutdown would
        # otherwise retry a closed port until the stop's grace runs out.
        server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    about_task = [line for line in lines if "adapter exploded" in line["message"]]
    assert about_task, server.log()
    assert all(line["task_id"] == task_id for line in about_task)
    assert all(line["trace_id"] == trace_id for line in about_task)

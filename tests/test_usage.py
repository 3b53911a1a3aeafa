"""Usage accounting: adapters report tokens/model/cost per attempt (report_usage); the
runtime stores it on the task (GetTask metadata `molecule.usage`), counts it in
Prometheus by model and sets it on the `llm_call` span; retries and later turns add.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import Task, TaskArtifactUpdateEvent, TaskStatusUpdateEvent
from google.protobuf.json_format import MessageToDict

from molecule_runtime.adapters import BaseAdapter, TaskInput, report_usage
from molecule_runtime.adapters.langgraph import local_model_available
from molecule_runtime.execution.attempt import run_attempt
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.execution.usage import UsageLedger, turn_of_artifact
from molecule_runtime.vocabulary import Meta
from tests.support.otlp import OtlpReceiver

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FAKE_MODELS = FIXTURES / "langgraph_fake_models.py"
USAGE_ADAPTER = FIXTURES / "usage_adapter.py"
A2A = {"A2A-Version": "1.0"}


# -- in process: the attempt and the ledger -----------------------------------


class Reporting(BaseAdapter):
    def __init__(self, reports: list[dict[str, Any]], fail: bool = False) -> None:
        self.reports = reports
        self.fail = fail

    @staticmethod
    def name() -> str:
        return "reporting"

    async def stream(self, task: TaskInput):
        yield "a "
        for report in self.reports:
            report_usage(**report)
        yield "b"
        if self.fail:
            raise RuntimeError("boom")


class TextOnly(BaseAdapter):
    @staticmethod
    def name() -> str:
        return "text-only"

    async def stream(self, task: TaskInput):
        yield "just "
        yield "text"


def collecting_events(task_id: str = "t1") -> tuple[TaskEvents, list[Any]]:
    delivered: list[Any] = []

    async def deliver(event: Any) -> None:
        delivered.append(event)

    return TaskEvents(task_id, "c1", deliver), delivered


def usage_updates(delivered: list[Any]) -> list[dict[str, Any]]:
    return [
        MessageToDict(e.metadata)[Meta.USAGE]
        for e in delivered
        if isinstance(e, TaskStatusUpdateEvent) and Meta.USAGE in e.metadata
    ]


async def test_an_adapter_that_yields_only_str_is_unchanged() -> None:
    events, delivered = collecting_events()
    result = await run_attempt(TextOnly(), TaskInput("t1", "c1", "hi"), events)
    assert result.produced == len("just text")
    assert all(isinstance(e, TaskArtifactUpdateEvent) for e in delivered), delivered
    assert usage_updates(delivered) == []


async def test_reports_of_an_attempt_add_up_and_reach_the_task() -> None:
    events, delivered = collecting_events()
    reports = [
        {"input_tokens": 5, "output_tokens": 1, "model": "m1", "cost": 0.25},
        {"input_tokens": 7, "output_tokens": 3, "model": "m1", "cost": 0.5},
    ]
    await run_attempt(Reporting(reports), TaskInput("t1", "c1", "hi"), events)
    usage = usage_updates(delivered)[-1]
    assert usage["input_tokens"] == 12 and usage["output_tokens"] == 4
    assert usage["total_tokens"] == 16 and usage["cost"] == 0.75
    assert usage["attempts"] == [
        {"turn": 1, "attempt": 1, "model": "m1", "input_tokens": 12, "output_tokens": 4, "cost": 0.75}
    ]


async def test_a_failed_attempt_stores_its_usage_and_the_retry_adds() -> None:
    events, delivered = collecting_events()
    report = {"input_tokens": 10, "output_tokens": 2, "model": "m"}
    with pytest.raises(RuntimeError, match="boom"):
        await run_attempt(Reporting([report], fail=True), TaskInput("t1", "c1", "hi"), events)
    assert usage_updates(delivered)[-1]["input_tokens"] == 10
    # The retry, maybe in another process: it starts from what the task stored.
    stored = Task(id="t1")
    stored.metadata.update({Meta.USAGE: usage_updates(delivered)[-1]})
    retry_events, retried = collecting_events()
    retry_events.usage = UsageLedger.from_task(stored)
    await run_attempt(Reporting([report]), TaskInput("t1", "c1", "hi", attempt=2), retry_events)
    usage = usage_updates(retried)[-1]
    assert (usage["input_tokens"], usage["output_tokens"]) == (20, 4)
    assert [(a["attempt"], a["input_tokens"]) for a in usage["attempts"]] == [(1, 10), (2, 10)]


def test_ledger_merge_counts_each_attempt_once() -> None:
    from molecule_runtime.adapters.usage import UsageReport

    mine = UsageLedger()
    mine.add(1, 2, UsageReport(3, 1, "m"))
    stored = UsageLedger()
    stored.add(1, 1, UsageReport(10, 2, "m"))
    stored.add(1, 2, UsageReport(3, 1, "m"))  # the same attempt, as stored meanwhile
    mine.merge(stored)
    task = Task(id="t")
    task.metadata.update(mine.metadata())
    again = UsageLedger.from_task(task).metadata()[Meta.USAGE]
    assert (again["input_tokens"], again["output_tokens"]) == (13, 3)


def test_turn_of_artifact() -> None:
    assert turn_of_artifact("t", "t-answer") == 1
    assert turn_of_artifact("t", "t-answer-3") == 3


def test_report_usage_outside_an_attempt_does_nothing() -> None:
    report_usage(input_tokens=1, output_tokens=1, model="m")
    with pytest.raises(ValueError):
        report_usage(input_tokens=-1)


# -- real servers ---------------------------------------------------------------


async def rpc(http: httpx.AsyncClient, url: str, method: str, params: dict) -> dict:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply = await http.post(url + "/", json=body, headers=A2A)
    payload = reply.json()
    assert "result" in payload, payload
    return payload["result"]


async def send(
    http: httpx.AsyncClient, url: str, text: str, metadata: dict | None = None, **ids: str
) -> dict:
    message = {
        "role": "ROLE_USER",
        "messageId": uuid.uuid4().hex,
        "parts": [{"text": text}],
        "metadata": metadata or {},
        **ids,
    }
    return (await rpc(http, url, "SendMessage", {"message": message}))["task"]


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match and all(
            dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")).get(k) == v
            for k, v in labels.items()
        ):
            total += float(match.group(2))
    return total


async def test_fake_model_usage_in_get_task_metrics_and_span(server_factory) -> None:
    script = [{"text": "two words", "usage": {"input_tokens": 7, "output_tokens": 2}}]
    with OtlpReceiver() as receiver:
        env = {
            "RUNTIME": "langgraph",
            "ADAPTER_OPTIONS": json.dumps(
                {"model_factory": f"{FAKE_MODELS}:scripted", "fake_script": script}
            ),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        server = server_factory(env)
        async with httpx.AsyncClient(timeout=60) as http:
            task = await send(http, server.url, "count my tokens")
            assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
            stored = await rpc(http, server.url, "GetTask", {"id": task["id"]})
            metrics = (await http.get(server.url + "/metrics")).text
        usage = stored["metadata"][Meta.USAGE]
        assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (7, 2, 9)
        assert usage["attempts"] == [
            {"turn": 1, "attempt": 1, "model": "scripted-fake", "input_tokens": 7, "output_tokens": 2}
        ]
        assert metric(metrics, "molecule_usage_input_tokens_total", model="scripted-fake") == 7
        assert metric(metrics, "molecule_usage_output_tokens_total", model="scripted-fake") == 2
        deadline = time.monotonic() + 20
        while True:
            spans = [
                s
                for s in receiver.spans
                if s.name == "llm_call" and s.attributes.get("a2a.task.id") == task["id"]
            ]
            if spans or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        (span,) = spans
        assert span.attributes["gen_ai.usage.input_tokens"] == 7
        assert span.attributes["gen_ai.usage.output_tokens"] == 2
        assert span.attributes["gen_ai.response.model"] == "scripted-fake"


_LOCAL_MISSING = local_model_available()


@pytest.mark.local_model
@pytest.mark.skipif(_LOCAL_MISSING is not None, reason=f"local model unavailable: {_LOCAL_MISSING}")
async def test_the_local_model_reports_its_usage(server_factory) -> None:
    env = {
        "RUNTIME": "langgraph",
        "OMP_WAIT_POLICY": "PASSIVE",
        "ADAPTER_OPTIONS": json.dumps({"max_tokens": 24}),
    }
    server = server_factory(env)
    async with httpx.AsyncClient(timeout=120) as http:
        task = await send(http, server.url, "Say hello.")
        assert task["status"]["state"] == "TASK_STATE_COMPLETED", server.log()
        stored = await rpc(http, server.url, "GetTask", {"id": task["id"]})
    usage = stored["metadata"][Meta.USAGE]
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 24, usage
    (attempt,) = usage["attempts"]
    assert attempt["model"].startswith("SmolLM2") and attempt["model"].endswith(".gguf")


async def test_a_later_turn_adds_to_the_task_usage(server_factory) -> None:
    server = server_factory({"ADAPTER_MODULE": str(USAGE_ADAPTER)})
    async with httpx.AsyncClient(timeout=60) as http:
        first = await send(http, server.url, "hello", {"ask": True})
        assert first["status"]["state"] == "TASK_STATE_INPUT_REQUIRED", first
        ids = {"taskId": first["id"], "contextId": first["contextId"]}
        second = await send(http, server.url, "more", {"input_tokens": 6, "output_tokens": 2}, **ids)
        assert second["status"]["state"] == "TASK_STATE_COMPLETED", second
        usage = (await rpc(http, server.url, "GetTask", {"id": first["id"]}))["metadata"][Meta.USAGE]
    assert (usage["input_tokens"], usage["output_tokens"]) == (16, 6)
    assert [(a["turn"], a["attempt"]) for a in usage["attempts"]] == [(1, 1), (2, 1)]


@pytest.mark.temporal
async def test_durable_retry_adds_its_usage(temporal_server, server_factory) -> None:
    queue = f"usage-{uuid.uuid4().hex[:10]}"
    server = server_factory(
        {
            "ADAPTER_MODULE": str(USAGE_ADAPTER),
            "TEMPORAL_HOST": temporal_server.address,
            "TEMPORAL_TASK_QUEUE": queue,
            "WORKSPACE_ID": f"ws-{queue}",
            "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
            "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.2",
        }
    )
    meta = {"fail_attempts": 1, "input_tokens": 10, "output_tokens": 4, "cost": 0.5}
    async with httpx.AsyncClient(timeout=60) as http:
        task = await send(http, server.url, "retry me", meta)
        assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
        stored = await rpc(http, server.url, "GetTask", {"id": task["id"]})
        metrics = (await http.get(server.url + "/metrics")).text
    assert stored["metadata"][Meta.MODE] == "durable"
    usage = stored["metadata"][Meta.USAGE]
    # Both attempts were paid for: the failed one and the retry.
    assert (usage["input_tokens"], usage["output_tokens"], usage["cost"]) == (20, 8, 1.0)
    assert [(a["attempt"], a["input_tokens"]) for a in usage["attempts"]] == [(1, 10), (2, 10)]
    assert stored["metadata"][Meta.ATTEMPT] == 2
    assert metric(metrics, "molecule_usage_input_tokens_total", model="usage-model") == 20
    assert metric(metrics, "molecule_usage_cost_total", model="usage-model") == 1.0

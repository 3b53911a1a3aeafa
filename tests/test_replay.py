"""Recorded workflow histories must replay against the current workflow code.

A change to AgentTaskWorkflow that is not replay-safe (e.g. an unguarded new
activity) fails here; guard such changes with `workflow.patched()`. Refresh the
fixtures of today's shape with `MOLECULE_RECORD_HISTORIES=1 pytest tests/test_durable.py
tests/test_payloads_by_reference.py tests/test_durable_outcomes.py
tests/test_handback_queue.py`; keep the older shapes (v1-*, v2-*, v3-*): workflows
started by older versions may still be running.
"""

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from molecule_runtime.durable.types import LlmCallResult
from molecule_runtime.durable.workflow import (
    ADAPTER_ENDS_PATCH,
    BY_REFERENCE_PATCH,
    HANDBACK_PATCH,
    AgentTaskWorkflow,
)

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "histories").glob("*.json"))


def test_fixtures_exist() -> None:
    names = {p.stem for p in FIXTURES}
    assert {"completed", "retried", "canceled", "non_retryable"} <= names
    # Recorded when llm_call returned a bare count: workflows started then must still replay.
    assert {"v1-completed", "v1-retried", "v1-canceled", "v1-non_retryable"} <= names
    # Recorded when the whole TaskInput (text, history) travelled in the payloads.
    assert {"v2-completed", "v2-retried", "v2-canceled", "v2-non_retryable"} <= names
    assert {"v2-input_required", "input_required"} <= names
    # The adapter ended the task (Done, Reject): its end is the workflow's outcome.
    assert {"done", "rejected"} <= names
    # An attempt handed back at shutdown, run again on the shared queue; before,
    # retried on the leaving process's queue (here: failed after three there).
    assert {"handed_back", "v3-handed_back"} <= names


def _decode(payloads: dict) -> object:
    return json.loads(base64.b64decode(payloads["payloads"][0]["data"]))


def _started_input(path: Path) -> dict:
    events = json.loads(path.read_text())["events"]
    started = _decode(events[0]["workflowExecutionStartedEventAttributes"]["input"])
    assert isinstance(started, dict)
    return started


def _patches(path: Path) -> list[str]:
    markers = [
        e["markerRecordedEventAttributes"]
        for e in json.loads(path.read_text())["events"]
        if "markerRecordedEventAttributes" in e
    ]
    return [
        str(_decode(m["details"]["patch-data"])["id"])  # type: ignore[index]
        for m in markers
        if m["markerName"] == "core_patch"
    ]


@pytest.mark.parametrize("name", ["completed", "retried", "canceled", "non_retryable", "input_required"])
def test_todays_fixtures_carry_ids_only(name: str) -> None:
    path = FIXTURES[0].parent / f"{name}.json"
    started = _started_input(path)
    assert started["task"] is None and set(started["ref"]) == {"task_id", "context_id", "message_id"}
    assert _patches(path) == ["payloads-by-reference"]


@pytest.mark.parametrize(
    ("name", "state", "message"),
    [("done", "completed", "All done."), ("rejected", "rejected", "not for me")],
)
def test_an_adapters_end_is_the_outcome(name: str, state: str, message: str) -> None:
    path = FIXTURES[0].parent / f"{name}.json"
    assert _patches(path) == [BY_REFERENCE_PATCH, ADAPTER_ENDS_PATCH]
    events = json.loads(path.read_text())["events"]
    completed = [
        e["workflowExecutionCompletedEventAttributes"]
        for e in events
        if "workflowExecutionCompletedEventAttributes" in e
    ]
    assert _decode(completed[0]["result"]) == {"state": state, "message": message}


def test_a_hand_back_moves_to_the_shared_queue_behind_its_patch() -> None:
    path = FIXTURES[0].parent / "handed_back.json"
    assert _patches(path) == [BY_REFERENCE_PATCH, HANDBACK_PATCH]
    assert _patches(FIXTURES[0].parent / "v3-handed_back.json") == [BY_REFERENCE_PATCH]


def test_older_fixtures_carry_the_whole_input() -> None:
    for name in ("v2-completed", "v2-input_required"):
        started = _started_input(FIXTURES[0].parent / f"{name}.json")
        assert "ref" not in started and started["task"]["text"]
        assert _patches(FIXTURES[0].parent / f"{name}.json") == []


def test_llm_call_results_of_every_version_decode() -> None:
    assert LlmCallResult.decode(12) == LlmCallResult(12)
    assert LlmCallResult.decode({"question": "Name?"}) == LlmCallResult(0, "Name?")
    assert LlmCallResult.decode({"produced": 5, "question": None}) == LlmCallResult(5)
    # Since the adapter's own end (Done, Reject) is the workflow's outcome.
    assert LlmCallResult.decode(
        {"produced": 4, "question": None, "ended": "rejected", "message": "not for me"}
    ) == LlmCallResult(4, None, "rejected", "not for me")
    assert LlmCallResult.decode({"produced": 4, "ended": None, "message": ""}) == LlmCallResult(4)
    with pytest.raises(TypeError):
        LlmCallResult.decode("12")


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"fixture-{path.stem}", path.read_text())
    # Sandboxed here on purpose: workers run the workflow unsandboxed (for CPU),
    # so this is where a nondeterministic call in workflow code is caught.
    replayer = Replayer(workflows=[AgentTaskWorkflow], workflow_runner=SandboxedWorkflowRunner())
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None

"""Recorded workflow histories must replay against the current workflow code.

A change to AgentTaskWorkflow that is not replay-safe (e.g. an unguarded new
activity) fails here; guard such changes with `workflow.patched()`. Refresh the
fixtures with `MOLECULE_RECORD_HISTORIES=1 pytest tests/test_durable.py`.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from molecule_runtime.durable.types import LlmCallResult
from molecule_runtime.durable.workflow import AgentTaskWorkflow

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "histories").glob("*.json"))


def test_fixtures_exist() -> None:
    names = {p.stem for p in FIXTURES}
    assert {"completed", "retried", "canceled", "non_retryable"} <= names
    # Recorded when llm_call returned a bare count: workflows started then must still replay.
    assert {"v1-completed", "v1-retried", "v1-canceled", "v1-non_retryable"} <= names


def test_llm_call_results_of_every_version_decode() -> None:
    assert LlmCallResult.decode(12) == LlmCallResult(12)
    assert LlmCallResult.decode({"question": "Name?"}) == LlmCallResult(0, "Name?")
    assert LlmCallResult.decode({"produced": 5, "question": None}) == LlmCallResult(5)
    with pytest.raises(TypeError):
        LlmCallResult.decode("12")


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"fixture-{path.stem}", path.read_text())
    result = await Replayer(workflows=[AgentTaskWorkflow]).replay_workflow(history)
    assert result.replay_failure is None

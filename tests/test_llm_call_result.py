"""An attempt's result (execution/attempt.py) and its payload in the workflow's
history (durable/types.py) say the same: the end as an Outcome name."""

from __future__ import annotations

from a2a.types.a2a_pb2 import TaskState

from molecule_runtime.durable.types import LlmCallResult
from molecule_runtime.execution.attempt import AttemptResult
from molecule_runtime.vocabulary import Outcome


def test_the_payload_of_an_attempts_result() -> None:
    assert LlmCallResult.of(AttemptResult(7)) == LlmCallResult(7)
    assert LlmCallResult.of(AttemptResult(0, "Name?")) == LlmCallResult(0, "Name?")
    rejected = AttemptResult(4, ended=TaskState.TASK_STATE_REJECTED, message="not for me")
    assert LlmCallResult.of(rejected) == LlmCallResult(4, None, Outcome.REJECTED, "not for me")
    done = AttemptResult(9, ended=TaskState.TASK_STATE_COMPLETED, message="done")
    payload = LlmCallResult.of(done)
    assert payload == LlmCallResult(9, None, Outcome.COMPLETED, "done")
    # What the workflow reads back from its history is the same result.
    assert LlmCallResult.decode({"produced": 9, "ended": "completed", "message": "done"}) == payload

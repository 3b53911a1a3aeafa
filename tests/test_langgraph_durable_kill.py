"""The built-in LangGraph adapter across a kill -9 in durable mode: the agent calls
a tool (it appends a line to a file), then streams its answer; the process is
killed during that second model call and restarted. The tool ran once (the
graph resumed from its checkpoint after the tool), and the retried model call
continued the stored partial answer instead of starting it over.

Real Temporal dev server, real store, real HTTP; the model is a fake chat model
that continues a prefilled answer as llama.cpp's server does
(tests/fixtures/langgraph_durable.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import TaskState

from tests.support.a2a import BackgroundStream, make_client, task_text, user_message, wait_terminal
from tests.support.durable import own_temporal
from tests.support.procs import ServerProcess

pytestmark = pytest.mark.temporal

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "langgraph_durable.py"
ANSWER = (
    "I wrote the line to your file once and only once, and this answer goes on for a while "
    "so that the process can be killed while it is still being written."
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    return request.getfixturevalue("postgres").database()


def env_for(temporal_address: str, store_url: str, tmp_path: Path) -> dict[str, str]:
    options = {
        "model_factory": f"{FIXTURE}:continuing",
        "tools_module": f"{FIXTURE}:TOOLS",
        "model_prefill": True,
        "fake_script": [
            {"tool": "append_line", "args": {"path": str(tmp_path / "effects.txt"), "line": "tool ran"}},
            {"text": ANSWER},
        ],
        "fake_delay": 0.15,
        "fake_record": str(tmp_path / "calls.jsonl"),
    }
    return {
        **own_temporal(temporal_address),
        "RUNTIME": "langgraph",
        "ADAPTER_OPTIONS": json.dumps(options),
        "TASK_STORE_URL": store_url,
        "STREAM_BATCH_WINDOW": "0",
        "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
        "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.2",
        "TEMPORAL_SCHEDULE_TO_START_TIMEOUT": "3",
    }


async def test_kill_during_the_answer_the_tool_ran_once_and_the_answer_continues(
    temporal_server, store_url: str, server_factory, tmp_path: Path
) -> None:
    env = env_for(temporal_server.address, store_url, tmp_path)
    server: ServerProcess = server_factory(env, workdir=tmp_path / "a")
    client = await make_client(server.url)
    stream = BackgroundStream(client, user_message("write the line"), may_break=True)
    client2 = None
    try:
        # Some of the answer streamed (the tool ran before it): kill the process.
        await stream.wait_chunks(8, timeout=60)
        server.kill()
        restarted = server_factory(env, workdir=tmp_path / "a", port=server.port)
        client2 = await make_client(restarted.url)
        task = await wait_terminal(client2, stream.task_id, timeout=90)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task_text(task) == ANSWER
        # The tool's side effect happened once: the retry resumed after it.
        assert (tmp_path / "effects.txt").read_text().splitlines() == ["tool ran"]
        calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
        assert [c["call"] for c in calls] == [0, 1, 1], calls
        # The retried model call continued the stored text instead of starting over.
        prefill = calls[-1]["prefill"]
        assert prefill and ANSWER.startswith(prefill) and prefill != ANSWER, calls
    finally:
        await stream.finish(15)
        await client.close()
        if client2 is not None:
            await client2.close()

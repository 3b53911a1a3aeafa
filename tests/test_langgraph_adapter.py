"""The built-in `langgraph` adapter through a real server: streaming, tools, history, cancel.

Deterministic tests plug a scripted fake chat model in through the
`model_factory` option (tests/fixtures/langgraph_fake_models.py); the
`local_model` test runs the real bundled SmolLM2 on llama.cpp.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import CancelTaskRequest, GetTaskRequest, TaskState

from molecule_runtime.adapters.base import AdapterConfig, TaskInput
from molecule_runtime.adapters.langgraph import (
    LangGraphAdapter,
    LangGraphOptions,
    local_model_available,
)
from molecule_runtime.adapters.langgraph.messages import trim_history
from molecule_runtime.adapters.langgraph.model_events import _permanent_failure
from molecule_runtime.adapters.langgraph.options import OptionsError
from tests.support.a2a import (
    event_task_id,
    make_client,
    run_task,
    stream_events,
    stream_until_chunks,
    task_text,
    user_message,
)

FIXTURES = Path(__file__).parent / "fixtures"
FAKE_MODELS = FIXTURES / "langgraph_fake_models.py"
TOOLS = FIXTURES / "langgraph_tools.py"


def workdir_with_fixtures(tmp_path: Path) -> Path:
    """A server working directory holding the fake-model and tools modules, as a user's repo would."""
    cwd = tmp_path / "app"
    cwd.mkdir()
    shutil.copy(FAKE_MODELS, cwd / FAKE_MODELS.name)
    shutil.copy(TOOLS, cwd / TOOLS.name)
    return cwd


def langgraph_env(**options: Any) -> dict[str, str]:
    return {
        "RUNTIME": "langgraph",
        # Every token as its own event, so the tests see token-by-token streaming.
        "STREAM_BATCH_WINDOW": "0",
        "ADAPTER_OPTIONS": json.dumps(
            {"model_factory": "langgraph_fake_models:scripted", **options}
        ),
    }


async def scripted_adapter(data_dir: Path, script: list[dict[str, Any]]) -> LangGraphAdapter:
    """The adapter in this process on the fake model (named by its file path), set up."""
    adapter = LangGraphAdapter()
    await adapter.setup(
        AdapterConfig(
            workspace_id="w",
            data_dir=data_dir,
            options={"model_factory": f"{FAKE_MODELS}:scripted", "fake_script": script},
        )
    )
    return adapter


def read_record(path: Path) -> list[list[dict[str, Any]]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_import_is_cheap() -> None:
    code = (
        "import sys, molecule_runtime.adapters.langgraph\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'langchain', 'langchain_core', 'langgraph', 'langchain_openai', 'openai', 'xllamacpp'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"imported at module load: {out.stdout.strip()}"


async def test_streams_text_and_runs_tool(server_factory, tmp_path: Path) -> None:
    cwd = workdir_with_fixtures(tmp_path)
    note = tmp_path / "note.txt"
    record = tmp_path / "record.jsonl"
    env = langgraph_env(
        tools_module="langgraph_tools",
        fake_record=str(record),
        fake_script=[
            {"tool": "write_note", "args": {"path": str(note), "text": "written by the tool"}},
            {"text": "I saved your note for you."},
        ],
        # A model's pace: tokens faster than the store takes events are merged.
        fake_delay=0.02,
    )
    server = server_factory(env=env, cwd=cwd)
    chunks, task = await run_task(server.url, "please save a note")
    # Tokens arrive one by one, and only the answer's text reaches the client.
    assert len(chunks) >= 5, chunks
    assert "".join(chunks) == "I saved your note for you."
    for chunk in chunks:
        assert "write_note" not in chunk and "{" not in chunk and "path" not in chunk
    # The tool really ran, and its result went back to the model.
    assert note.read_text() == "written by the tool"
    calls = read_record(record)
    assert len(calls) == 2
    assert calls[1][-1] == {"type": "tool", "content": "saved 19 characters"}
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == "I saved your note for you."


async def test_history_and_system_prompt_reach_the_model(server_factory, tmp_path: Path) -> None:
    cwd = workdir_with_fixtures(tmp_path)
    (cwd / "prompt.txt").write_text("You are the history test agent.\n")
    record = tmp_path / "record.jsonl"
    env = langgraph_env(
        system_prompt_file="prompt.txt",
        fake_record=str(record),
        fake_script=[{"text": "Nice to meet you, Ada."}],
    )
    server = server_factory(env=env, cwd=cwd)
    client = await make_client(server.url)
    try:
        first = [e async for e in stream_events(client, user_message("My name is Ada."))]
        context_id = first[0].task.context_id
        assert context_id
        second = [
            e
            async for e in stream_events(
                client, user_message("What is my name?", context_id=context_id)
            )
        ]
        assert event_task_id(second[0]) != event_task_id(first[0])
        calls = read_record(record)
        assert len(calls) == 2
        assert calls[0] == [
            {"type": "system", "content": "You are the history test agent."},
            {"type": "human", "content": "My name is Ada."},
        ]
        assert calls[1] == [
            {"type": "system", "content": "You are the history test agent."},
            {"type": "human", "content": "My name is Ada."},
            {"type": "ai", "content": "Nice to meet you, Ada."},
            {"type": "human", "content": "What is my name?"},
        ]
    finally:
        await client.close()


async def test_cancel_stops_generation(server_factory, tmp_path: Path) -> None:
    cwd = workdir_with_fixtures(tmp_path)
    tokens = tmp_path / "tokens.txt"
    words = " ".join(f"word{i}" for i in range(200))
    env = langgraph_env(fake_tokens=str(tokens), fake_delay=0.05, fake_script=[{"text": words}])
    server = server_factory(env=env, cwd=cwd)
    client = await make_client(server.url)
    canceller = await make_client(server.url)
    try:
        stream, task_id = await stream_until_chunks(client, "talk a lot", 3)
        canceled = await canceller.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        await stream.aclose()
        # The model's generation saw the cancellation and produced nothing after it.
        for _ in range(100):
            if "CANCELLED" in tokens.read_text():
                break
            await asyncio.sleep(0.05)
        lines = tokens.read_text().splitlines()
        assert lines[-1] == "CANCELLED", lines[-5:]
        await asyncio.sleep(0.5)
        assert tokens.read_text().splitlines() == lines
        assert len(lines) < 100, "generation ran on long after the cancel"
        task = await canceller.get_task(GetTaskRequest(id=task_id))
        assert task.status.state == TaskState.TASK_STATE_CANCELED
        assert len(task_text(task)) < len(words)
    finally:
        await client.close()
        await canceller.close()


async def test_bad_model_factory_fails_start_up(server_factory, tmp_path: Path) -> None:
    env = {
        "RUNTIME": "langgraph",
        "ADAPTER_OPTIONS": json.dumps({"model_factory": "no_such_module:make"}),
    }
    server = server_factory(env=env, cwd=tmp_path, wait=False)
    assert server.proc is not None
    server.proc.wait(timeout=30)
    assert server.proc.returncode != 0
    assert "model_factory='no_such_module:make'" in server.log()


async def test_model_factory_by_file_path(tmp_path: Path) -> None:
    """`path/to/file.py:attr` works from any working directory (no import path needed)."""
    adapter = await scripted_adapter(tmp_path, [{"text": "from a file path"}])
    try:
        chunks = [c async for c in adapter.stream(TaskInput("t", "c", "hi"))]
        assert "".join(chunks) == "from a file path"
    finally:
        await adapter.aclose()


def test_options_validation() -> None:
    config = AdapterConfig(workspace_id="w", data_dir=Path("."), options={"max_tokens": "64"})
    assert LangGraphOptions.from_config(config).max_tokens == 64
    for bad in ({"max_tokens": "many"}, {"max_tokens": 0}, {"temperature": True}, {"tools_module": 3}):
        with pytest.raises(OptionsError):
            LangGraphOptions.from_config(AdapterConfig("w", Path("."), options=bad))


def test_permanent_failures_are_not_retried() -> None:
    class HTTPError(Exception):
        def __init__(self, status_code: int) -> None:
            super().__init__(f"status {status_code}")
            self.status_code = status_code

    assert _permanent_failure(HTTPError(401)) is not None
    assert _permanent_failure(HTTPError(404)) is not None
    assert _permanent_failure(HTTPError(429)) is None
    assert _permanent_failure(HTTPError(503)) is None
    assert _permanent_failure(TimeoutError()) is None


_LOCAL_MISSING = local_model_available()


@pytest.mark.local_model
@pytest.mark.skipif(_LOCAL_MISSING is not None, reason=f"local model unavailable: {_LOCAL_MISSING}")
async def test_real_local_model_streams(server_factory, tmp_path: Path) -> None:
    env = {
        "RUNTIME": "langgraph",
        "OMP_WAIT_POLICY": "PASSIVE",
        "ADAPTER_OPTIONS": json.dumps({"max_tokens": 48}),
    }
    server = server_factory(env=env, cwd=tmp_path)
    chunks, task = await run_task(server.url, "What is the capital of France?")
    assert chunks and all(chunks)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, server.log()
    assert task_text(task).strip()


def test_trim_history_keeps_newest_turns_that_fit() -> None:
    history = [("user", "a" * 40), ("assistant", "b" * 40), ("user", "c" * 10), ("assistant", "d" * 10)]
    task = TaskInput("t", "c", "e" * 10, history=history)
    assert trim_history(task, 1000) is task
    assert trim_history(task, 30).history == [("user", "c" * 10), ("assistant", "d" * 10)]
    # The oldest kept turn would be an answer: it is dropped too.
    assert trim_history(task, 75).history == [("user", "c" * 10), ("assistant", "d" * 10)]
    assert trim_history(task, 5).history == []
    assert trim_history(task, 5).text == "e" * 10


@pytest.mark.temporal
async def test_runs_unchanged_in_durable_mode(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    cwd = workdir_with_fixtures(tmp_path)
    note = tmp_path / "note.txt"
    env = {
        **langgraph_env(
            tools_module="langgraph_tools",
            fake_script=[
                {"tool": "write_note", "args": {"path": str(note), "text": "durable note"}},
                {"text": "Saved it durably."},
            ],
            # A model's pace: tokens faster than the store takes events are merged.
            fake_delay=0.02,
        ),
        "TEMPORAL_HOST": temporal_server.address,
        "TEMPORAL_TASK_QUEUE": f"lg-{tmp_path.name}",
        "WORKSPACE_ID": f"lg-{tmp_path.name}",
    }
    server = server_factory(env=env, cwd=cwd)
    chunks, task = await run_task(server.url, "save a note")
    assert len(chunks) >= 3 and "".join(chunks) == "Saved it durably."
    assert note.read_text() == "durable note"
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.metadata["molecule.mode"] == "durable"


async def test_genai_attributes_on_the_current_span(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    usage = {"input_tokens": 7, "output_tokens": 2}
    adapter = await scripted_adapter(tmp_path, [{"text": "two words", "usage": usage}])
    with provider.get_tracer("t").start_as_current_span("llm_call"):
        text = "".join([c async for c in adapter.stream(TaskInput("t1", "c1", "hi"))])
    await adapter.aclose()
    assert text == "two words"
    (span,) = exporter.get_finished_spans()
    assert span.attributes["gen_ai.usage.input_tokens"] == 7
    assert span.attributes["gen_ai.usage.output_tokens"] == 2


@pytest.mark.parametrize(
    "description,factory,expected",
    [
        ("local:SmolLM2-135M.gguf", False, ("llama.cpp", "SmolLM2-135M.gguf")),
        ("openai:gpt-4o-mini", False, ("openai", "gpt-4o-mini")),
        ("anthropic:claude-x", False, ("anthropic", "claude-x")),
        ("mod:make", True, (None, None)),
    ],
)
def test_genai_identity(description: str, factory: bool, expected: tuple) -> None:
    from molecule_runtime.adapters.langgraph.model_events import genai_identity

    assert genai_identity(description, object(), factory=factory) == expected

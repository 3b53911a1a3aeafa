"""Each template in `adapters/` works the way a template repo uses it.

`adapter.py` is copied alone into an empty directory and the server starts
there with `ADAPTER_MODULE=adapter`: nothing else from this repository is on
hand, exactly as in a repo made from the template.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Part,
    SendMessageRequest,
    TaskState,
)
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Value

from tests.support.a2a import (
    make_client,
    run_task,
    stream_until_chunks,
    task_text,
    user_message,
)
from tests.support.procs import processes

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "adapters"
FAKE_MODELS = ROOT / "tests" / "fixtures" / "langgraph_fake_models.py"


def lone_adapter(tmp_path: Path, template: str) -> Path:
    cwd = tmp_path / f"{template}-repo"
    cwd.mkdir()
    shutil.copy(TEMPLATES / template / "adapter.py", cwd / "adapter.py")
    return cwd


def template_env(**options: Any) -> dict[str, str]:
    # Unbatched, so the tests see each chunk the template yields.
    return {
        "ADAPTER_MODULE": "adapter",
        "ADAPTER_OPTIONS": json.dumps(options),
        "STREAM_BATCH_WINDOW": "0",
    }


@pytest.mark.parametrize("template", ["echo", "langgraph", "cli", "report"])
def test_template_folder_is_complete(template: str) -> None:
    folder = TEMPLATES / template
    for name in ("adapter.py", "requirements.txt", "README.md"):
        assert (folder / name).is_file(), f"adapters/{template}/{name} is missing"
    source = (folder / "adapter.py").read_text()
    assert "class Adapter(" in source
    assert "from molecule_runtime.adapters" in source


async def test_echo_template(server_factory, tmp_path: Path) -> None:
    cwd = lone_adapter(tmp_path, "echo")
    # A word every 20 ms: chunks faster than the store takes events would be merged.
    server = server_factory(env=template_env(prefix="> ", delay=0.02), cwd=cwd)
    chunks, task = await run_task(server.url, "copy me please")
    # The first chunk goes out at once; a busy machine merges later ones (batching.py
    # widens its window with the loop's lag), never splitting one.
    pieces = ["> ", "copy", " me", " please"]
    runs = {"".join(pieces[i:j]) for i in range(len(pieces)) for j in range(i + 1, len(pieces) + 1)}
    assert chunks[0] == "> " and "".join(chunks) == "".join(pieces), chunks
    assert all(chunk in runs for chunk in chunks), chunks
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == "> copy me please"


async def test_langgraph_template(server_factory, tmp_path: Path) -> None:
    cwd = lone_adapter(tmp_path, "langgraph")
    record = tmp_path / "record.jsonl"
    env = template_env(
        # A model factory named by file path: the lone adapter.py has nothing beside it.
        model_factory=f"{FAKE_MODELS}:scripted",
        fake_record=str(record),
        fake_script=[
            {"tool": "count_words", "args": {"text": "one two three four"}},
            {"text": "That text has four words."},
        ],
    )
    server = server_factory(env=env, cwd=cwd)
    chunks, task = await run_task(server.url, "How many words in 'one two three four'?")
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "".join(chunks) == "That text has four words."
    assert len(chunks) > 1
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    # The template's own prompt and tool are in use.
    assert calls[0][0]["type"] == "system"
    assert calls[0][0]["content"].startswith("You are a concise, friendly assistant.")
    assert calls[1][-1] == {"type": "tool", "content": "4"}


async def test_cli_template_streams_stdout(server_factory, tmp_path: Path) -> None:
    cwd = lone_adapter(tmp_path, "cli")
    script = 'for w in $1; do echo "$w"; sleep 0.05; done'
    env = template_env(command=["sh", "-c", script, "sh", "{prompt}"])
    server = server_factory(env=env, cwd=cwd)
    chunks, task = await run_task(server.url, "alpha beta gamma delta")
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == "alpha\nbeta\ngamma\ndelta\n"
    assert len(chunks) >= 3, "stdout was not streamed as it was printed"


async def test_cli_template_stdin_and_failure(server_factory, tmp_path: Path) -> None:
    cwd = lone_adapter(tmp_path, "cli")
    code = (
        "import sys\n"
        "text = sys.stdin.read()\n"
        "print(text.upper(), flush=True)\n"
        "if 'fail' in text:\n"
        "    sys.exit('boom on stderr')\n"
    )
    server = server_factory(env=template_env(command=[sys.executable, "-c", code]), cwd=cwd)
    _, task = await run_task(server.url, "shout this")
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == "SHOUT THIS\n"
    _, task = await run_task(server.url, "please fail")
    assert task.status.state == TaskState.TASK_STATE_FAILED
    reason = "".join(p.text for p in task.status.message.parts)
    assert "status 1" in reason and "boom on stderr" in reason


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, read from /proc."""
    # Fields after the parenthesised command name: state ppid pgrp ...
    return [pid for pid, fields in processes() if int(fields[2]) == pgid and fields[0] != "Z"]


@pytest.mark.parametrize("stubborn", [False, True], ids=["polite", "ignores-sigterm"])
async def test_cli_template_cancel_kills_process_group(
    server_factory, tmp_path: Path, stubborn: bool
) -> None:
    cwd = lone_adapter(tmp_path, "cli")
    pidfile = tmp_path / "cli.pid"
    termfile = tmp_path / "got-sigterm"
    # A polite CLI exits on SIGTERM (and says so); a stubborn one ignores it.
    trap = "trap '' TERM" if stubborn else f"trap 'echo yes > {termfile}; exit 0' TERM"
    # A long-lived child too: killing only the CLI's own process is not enough.
    script = f"{trap}; sleep 60 & echo $$ > {pidfile}; while true; do echo tick; sleep 0.1; done"
    grace = 0.5
    env = template_env(command=["sh", "-c", script], kill_grace=grace)
    server = server_factory(env=env, cwd=cwd)
    client = await make_client(server.url)
    canceller = await make_client(server.url)
    try:
        stream, task_id = await stream_until_chunks(client, "run forever", 2)
        pid = int(pidfile.read_text())
        assert len(group_members(pid)) >= 2, "the CLI and its child are not running"
        started = time.monotonic()
        canceled = await canceller.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        await stream.aclose()
        # Left alone the group would live on (`sleep 60`, an endless loop): a bound
        # well past the grace catches that; a loaded machine only adds to the time.
        while group_members(pid) and time.monotonic() - started < grace + 10:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        assert not group_members(pid), f"processes left in group {pid}: {group_members(pid)}"
        assert elapsed < grace + 10, f"stopping the CLI took {elapsed:.1f}s"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        # SIGTERM came first, so a CLI that handles it could clean up.
        assert termfile.exists() != stubborn
        task = await canceller.get_task(GetTaskRequest(id=task_id))
        assert task.status.state == TaskState.TASK_STATE_CANCELED
    finally:
        await client.close()
        await canceller.close()


async def test_report_template_returns_a_csv_file_and_data(server_factory, tmp_path: Path) -> None:
    cwd = lone_adapter(tmp_path, "report")
    server = server_factory(env=template_env(filename="stock.csv"), cwd=cwd)
    client = await make_client(server.url, streaming=False)
    try:
        message = user_message("apples 3, pears 5")
        rows = Part()
        rows.data.CopyFrom(json_format.ParseDict({"rows": [{"item": "plums", "qty": 7}]}, Value()))
        message.parts.append(rows)
        message.parts.append(Part(raw=b"item,qty\nfigs,1\n", filename="in.csv", media_type="text/csv"))
        (response,) = [r async for r in client.send_message(SendMessageRequest(message=message))]
        task = await client.get_task(GetTaskRequest(id=response.task.id))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.status.message.parts[0].text == "Report ready."
        artifacts = {a.name: a for a in task.artifacts}
        assert artifacts["answer"].parts[0].text == "4 items, 16 in all."
        csv_part = artifacts["report"].parts[0]
        assert (csv_part.filename, csv_part.media_type) == ("stock.csv", "text/csv")
        assert csv_part.raw == b"item,qty\nplums,7\nfigs,1\napples,3\npears,5\n"
        summary = json_format.MessageToDict(artifacts["summary"].parts[0].data)
        assert summary == {"items": 4, "total": 16, "largest": {"item": "plums", "qty": 7}}

        (refused,) = [
            r async for r in client.send_message(SendMessageRequest(message=user_message("hello")))
        ]
        assert refused.task.status.state == TaskState.TASK_STATE_REJECTED
        assert "apples 3, pears 5" in refused.task.status.message.parts[0].text
    finally:
        await client.close()

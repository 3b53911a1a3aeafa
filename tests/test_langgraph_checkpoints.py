"""The langgraph adapter's checkpoints, per task store (SQLite, PostgreSQL, memory),
driven in this process: a retried attempt of a turn resumes the graph after its
last completed node, continues the partial answer (or, for a model that cannot
continue a message, restarts that one call), and finished tasks' threads go
with retention.

The attempt runs inside the runtime's step journal (`journaling`), which names
the task turn, as it does in the server; a stopped attempt is one whose
generator was closed mid-answer, the graph's run cancelled in its model call.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from a2a.server.models import TaskModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from molecule_runtime.adapters.base import AdapterConfig, TaskInput
from molecule_runtime.adapters.langgraph import LangGraphAdapter
from molecule_runtime.adapters.langgraph.checkpoints import Checkpoints, psycopg_conninfo
from molecule_runtime.adapters.langgraph.resume import plan_resume
from molecule_runtime.execution.steps import AttemptSteps, journaling
from molecule_runtime.store.factory import open_stores
from molecule_runtime.store.steps import StepStore

FIXTURE = Path(__file__).parent / "fixtures" / "langgraph_durable.py"
ANSWER = "The note is saved and the file now holds exactly one line for you."


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    if request.param == "memory":
        return "memory"
    return request.getfixturevalue("postgres").database()


async def durable_adapter(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> LangGraphAdapter:
    monkeypatch.setenv("TASK_STORE_URL", store_url)
    adapter = LangGraphAdapter()
    await adapter.setup(
        AdapterConfig(
            workspace_id="w",
            data_dir=tmp_path,
            options={
                "model_factory": f"{FIXTURE}:continuing",
                "tools_module": f"{FIXTURE}:TOOLS",
                "fake_script": [
                    {"tool": "append_line", "args": {"path": str(tmp_path / "effects.txt"), "line": "tool ran"}},
                    {"text": ANSWER},
                ],
                "fake_record": str(tmp_path / "calls.jsonl"),
                **options,
            },
        )
    )
    return adapter


async def attempt(
    adapter: LangGraphAdapter, task: TaskInput, steps: StepStore, *, stop_after: int | None = None
) -> str:
    """One attempt of the task's first turn: its streamed text (stopped after
    `stop_after` chunks, as a crash would stop it)."""
    chunks: list[str] = []
    journal = AttemptSteps(steps, task.task_id, f"{task.task_id}-answer", [])
    with journaling(journal):
        agen = adapter.stream(task)
        try:
            async for item in agen:
                assert isinstance(item, str), item
                chunks.append(item)
                if stop_after is not None and len(chunks) >= stop_after:
                    break
        finally:
            await agen.aclose()
    return "".join(chunks)


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def effects(tmp_path: Path) -> list[str]:
    return (tmp_path / "effects.txt").read_text().splitlines()


async def test_retry_resumes_after_the_tool_and_continues_the_answer(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = await durable_adapter(tmp_path, store_url, monkeypatch, model_prefill=True)
    steps = StepStore()
    task_id = str(uuid.uuid4())
    try:
        assert adapter.continues_partial
        partial = await attempt(adapter, TaskInput(task_id, "c", "save a note"), steps, stop_after=6)
        assert partial and ANSWER.startswith(partial) and partial != ANSWER
        rest = await attempt(
            adapter, TaskInput(task_id, "c", "save a note", attempt=2, partial=partial), steps
        )
        # Only what comes after the stored text, and the answer is whole.
        assert partial + rest == ANSWER
        # The tool ran once; the retry's only model call continued the prefix.
        assert effects(tmp_path) == ["tool ran"]
        assert [c["call"] for c in calls(tmp_path)] == [0, 1, 1]
        assert calls(tmp_path)[-1]["prefill"] == partial
    finally:
        await adapter.aclose()


async def test_a_model_that_cannot_continue_restarts_that_call_only(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = await durable_adapter(tmp_path, store_url, monkeypatch, model_prefill=False)
    steps = StepStore()
    task_id = str(uuid.uuid4())
    try:
        # The runtime then replaces the stored answer with the retry's.
        assert adapter.continues_partial is False
        assert LangGraphAdapter.continues_partial is True
        partial = await attempt(adapter, TaskInput(task_id, "c", "save a note"), steps, stop_after=6)
        retry = await attempt(
            adapter, TaskInput(task_id, "c", "save a note", attempt=2, partial=partial), steps
        )
        assert retry == ANSWER
        assert effects(tmp_path) == ["tool ran"]
        assert [(c["call"], c["prefill"]) for c in calls(tmp_path)] == [(0, ""), (1, ""), (1, "")]
    finally:
        await adapter.aclose()


async def test_a_retry_after_the_graph_finished_runs_nothing_again(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = await durable_adapter(tmp_path, store_url, monkeypatch, model_prefill=True)
    steps = StepStore()
    task_id = str(uuid.uuid4())
    try:
        assert await attempt(adapter, TaskInput(task_id, "c", "save a note"), steps) == ANSWER
        # The store had taken part of the answer when the attempt was lost.
        stored = ANSWER[:20]
        rest = await attempt(
            adapter, TaskInput(task_id, "c", "save a note", attempt=2, partial=stored), steps
        )
        assert stored + rest == ANSWER
        assert effects(tmp_path) == ["tool ran"]
        assert len(calls(tmp_path)) == 2
    finally:
        await adapter.aclose()


async def test_outside_a_task_no_thread_is_kept(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = await durable_adapter(tmp_path, store_url, monkeypatch)
    try:
        chunks = [c async for c in adapter.stream(TaskInput("t", "c", "save a note"))]
        assert "".join(c for c in chunks if isinstance(c, str)) == ANSWER
        assert adapter._checkpoints is not None
        saver = adapter._checkpoints.saver
        assert [c async for c in saver.alist(None)] == []
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_retention_deletes_the_threads_of_old_finished_tasks(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("postgres").database()
    )
    stores = await open_stores(url, event_retention=0, idempotency_retention=0)
    await stores.aclose()
    adapter = await durable_adapter(tmp_path, url, monkeypatch, model_prefill=True)
    checkpoints = adapter._checkpoints
    assert isinstance(checkpoints, Checkpoints) and checkpoints.kind == kind
    old = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)
    tasks = {
        "old-finished": (old, "TASK_STATE_COMPLETED"),
        "old-waiting": (old, "TASK_STATE_INPUT_REQUIRED"),
        "new-finished": (datetime.now(UTC).replace(tzinfo=None), "TASK_STATE_FAILED"),
    }
    ids = {name: str(uuid.uuid4()) for name in tasks}
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for name, (updated, state) in tasks.items():
                await conn.execute(
                    TaskModel.__table__.insert().values(
                        id=ids[name], context_id="c", kind="task", status={"state": state},
                        last_updated=updated,
                    )
                )
        steps = StepStore()
        for name in tasks:
            await attempt(adapter, TaskInput(ids[name], "c", "save a note"), steps)
        deleted = await checkpoints.prune(datetime.now(UTC) - timedelta(days=7))
        assert deleted == 1
        async with engine.connect() as conn:
            threads = (
                await conn.execute(select(func.count()).select_from(_checkpoints_table()))
            ).scalar_one()
        assert threads > 0
        left = {c.config["configurable"]["thread_id"] async for c in checkpoints.saver.alist(None)}
        assert left == {f"{ids[n]}:{ids[n]}-answer" for n in ("old-waiting", "new-finished")}
    finally:
        await engine.dispose()
        await adapter.aclose()


def _checkpoints_table() -> Any:
    from sqlalchemy import column, table

    return table("checkpoints", column("thread_id"))


async def test_memory_threads_expire_after_the_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoints = await Checkpoints.open("memory", retention=0.05)
    from langgraph.checkpoint.base import empty_checkpoint

    config = {"configurable": {"thread_id": "a:1", "checkpoint_ns": ""}}
    await checkpoints.saver.aput(config, empty_checkpoint(), {}, {})
    checkpoints.started("a:1")
    import asyncio

    await asyncio.sleep(0.1)
    checkpoints.started("b:1")
    assert [c async for c in checkpoints.saver.alist({"configurable": {"thread_id": "a:1"}})] == []
    await checkpoints.aclose()


def test_plan_resume() -> None:
    # A continuing adapter streams what comes after the stored text.
    assert plan_resume("", "Hel", continues=True).prefix == "Hel"
    assert plan_resume("Let me look. ", "Let me look. The", continues=True).prefix == "The"
    late = plan_resume("Let me look. ", "Let me", continues=True)
    assert (late.replay, late.prefix) == (" look. ", "")
    assert plan_resume("abc", "xyz", continues=True).prefix == ""
    # A restarting one streams the whole answer again, the interrupted call anew.
    again = plan_resume("Let me look. ", "Let me look. The", continues=False)
    assert (again.replay, again.prefix) == ("Let me look. ", "")


def test_psycopg_conninfo() -> None:
    url = "postgresql+asyncpg://u:p%40ss@db.example:5433/tasks?ssl=require"
    assert psycopg_conninfo(url) == "postgresql://u:p%40ss@db.example:5433/tasks?sslmode=require"

"""The LangGraph adapter keeps its checkpoints in the task store the runtime was
given, however it was given: a URL only on the command line (`--task-store-url`)
reaches it through `AdapterConfig.task_store_url`, not through the environment.

Real SQLite files, the real CLI parsing and `Services.open`; the model is the
fake chat model of tests/fixtures/langgraph_durable.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from molecule_runtime.adapters.base import AdapterConfig
from molecule_runtime.adapters.langgraph import LangGraphAdapter
from molecule_runtime.cli import _parser, load_settings
from molecule_runtime.services import Services

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "langgraph_durable.py"
OPTIONS = {"model_factory": f"{FIXTURE}:continuing", "fake_script": [{"text": "hello"}]}


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_a_store_url_given_only_on_the_command_line_holds_the_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TASK_STORE_URL", "TEMPORAL_HOST", "ADAPTER_MODULE"):
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("MOLECULE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ADAPTER_OPTIONS", json.dumps(OPTIONS))
    flagged = tmp_path / "flagged.db"
    args = _parser().parse_args(
        ["--runtime", "langgraph", "--task-store-url", f"sqlite+aiosqlite:///{flagged}"]
    )
    services = await Services.open(load_settings(args), accept_tasks=True)
    try:
        assert isinstance(services.adapter, LangGraphAdapter)
        # The saver's tables are in the task store's own file...
        assert {"checkpoints", "writes"} <= tables(flagged)
        assert "tasks" in tables(flagged)
        # ...not in the default store the environment alone would name.
        assert not (data_dir / "tasks.db").exists()
    finally:
        await services.close()


async def test_the_runtimes_url_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "environment.db"
    monkeypatch.setenv("TASK_STORE_URL", f"sqlite+aiosqlite:///{elsewhere}")
    given = tmp_path / "given.db"
    adapter = LangGraphAdapter()
    await adapter.setup(
        AdapterConfig(
            workspace_id="w",
            data_dir=tmp_path,
            options=OPTIONS,
            task_store_url=f"sqlite+aiosqlite:///{given}",
        )
    )
    try:
        assert "checkpoints" in tables(given)
        assert not elsewhere.exists()
    finally:
        await adapter.aclose()


async def test_set_up_outside_the_runtime_the_environment_names_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "environment.db"
    monkeypatch.setenv("TASK_STORE_URL", f"sqlite+aiosqlite:///{named}")
    adapter = LangGraphAdapter()
    await adapter.setup(AdapterConfig(workspace_id="w", data_dir=tmp_path, options=OPTIONS))
    try:
        assert "checkpoints" in tables(named)
    finally:
        await adapter.aclose()


def test_the_store_url_stays_out_of_the_configs_repr() -> None:
    config = AdapterConfig(
        workspace_id="w",
        data_dir=Path("."),
        task_store_url="postgresql+asyncpg://user:secret@db:5432/tasks",
    )
    assert "secret" not in repr(config)

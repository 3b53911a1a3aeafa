"""The task store: SQLite survives a restart, `memory` works, unsupported URLs stop start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from a2a.types.a2a_pb2 import GetTaskRequest

from tests.support.a2a import assert_tasks_kept, make_client, send_texts, task_text
from tests.support.procs import ServerProcess


async def test_restart_keeps_tasks(server_factory, tmp_path: Path) -> None:
    workdir = tmp_path / "node"
    first = server_factory(workdir=workdir)
    ids = await send_texts(first.url, ["before the restart", "still there"])
    first.stop()
    assert first.proc is not None and first.proc.returncode == 0, first.log()
    assert (workdir / "data" / "tasks.db").is_file()

    second = server_factory(workdir=workdir)
    await assert_tasks_kept(second.url, ids, ["before the restart", "still there"])


async def test_memory_store(server_factory, tmp_path: Path) -> None:
    workdir = tmp_path / "mem"
    server = server_factory(env={"TASK_STORE_URL": "memory"}, workdir=workdir)
    async with httpx.AsyncClient(timeout=5) as http:
        ready = await http.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["store"] == "ok"
    [task_id] = await send_texts(server.url, ["kept in memory"])
    client = await make_client(server.url)
    try:
        task = await client.get_task(GetTaskRequest(id=task_id))
        assert task_text(task) == "kept in memory"
    finally:
        await client.close()
    async with httpx.AsyncClient(timeout=5) as http:
        unknown = await http.post(
            server.url + "/",
            headers={"A2A-Version": "1.0"},
            json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "no-such-task"}},
        )
    assert unknown.json()["error"]["code"] == -32001, unknown.text  # TaskNotFoundError
    assert not (workdir / "data" / "tasks.db").exists()
    # The start-up sweep of unfinished tasks and the owner lookups work on this store too.
    assert "ERROR" not in server.log() and "Traceback" not in server.log(), server.log()


def test_unsupported_store_url_exits_before_binding(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, {"TASK_STORE_URL": "mysql://user:s3cret@db.internal/tasks"}
    ).start(wait=False)
    assert server.proc is not None
    try:
        code = server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.stop()
        raise
    finally:
        server.stop()
    output = server.log()
    assert code != 0
    assert "TASK_STORE_URL" in output and "not supported" in output
    assert "memory" in output and "sqlite+aiosqlite" in output and "postgresql+asyncpg" in output
    assert "s3cret" not in output
    assert "Uvicorn running" not in output and "serving" not in output

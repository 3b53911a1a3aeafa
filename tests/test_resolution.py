"""Adapter resolution errors: the process exits non-zero before binding its port, and says why."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from molecule_runtime.adapters.loader import (
    PACKAGED_ADAPTERS,
    AdapterResolutionError,
    builtin_adapters,
    resolve_adapter_class,
)
from tests.support.procs import ServerProcess, free_port, spawn, stop_process
from tests.support.template_repo import template_repo


def run_until_exit(tmp_path: Path, env: dict[str, str], files: dict[str, str]) -> tuple[int, str]:
    """Start a server in a directory holding `files`; it must exit on its own."""
    cwd = tmp_path / "app"
    cwd.mkdir()
    for name, text in files.items():
        (cwd / name).write_text(text)
    server = ServerProcess(tmp_path, env, cwd=cwd).start(wait=False)
    assert server.proc is not None
    try:
        code = server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server kept running:\n{server.log()}")
    finally:
        server.stop()
    output = server.log()
    # The port was never bound: it is still free.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", server.port))
    assert "Uvicorn running" not in output and " serving " not in output
    return code, output


def test_builtins_are_registered() -> None:
    assert "echo" in builtin_adapters()


def test_missing_adapter_module(tmp_path: Path) -> None:
    code, output = run_until_exit(tmp_path, {"ADAPTER_MODULE": "no_such_adapter_mod"}, {})
    assert code != 0
    assert "ADAPTER_MODULE='no_such_adapter_mod'" in output
    assert "no_such_adapter_mod.py" in output  # where it looked
    assert "built-in adapters (RUNTIME): " in output and "echo" in output


def test_module_without_adapter(tmp_path: Path) -> None:
    code, output = run_until_exit(
        tmp_path, {"ADAPTER_MODULE": "adapter"}, {"adapter.py": "class Agent:\n    pass\n"}
    )
    assert code != 0
    assert "defines no class named `Adapter`" in output


def test_adapter_not_a_base_adapter(tmp_path: Path) -> None:
    source = "class Adapter:\n    async def stream(self, task):\n        yield 'x'\n"
    code, output = run_until_exit(tmp_path, {"ADAPTER_MODULE": "adapter"}, {"adapter.py": source})
    assert code != 0
    assert "not a subclass of molecule_runtime.adapters.BaseAdapter" in output


def test_unknown_runtime_lists_builtins(tmp_path: Path) -> None:
    code, output = run_until_exit(tmp_path, {"RUNTIME": "no-such-runtime"}, {})
    assert code != 0
    assert "RUNTIME='no-such-runtime'" in output
    listed = output.split("available built-ins:", 1)[1].splitlines()[0]
    assert "echo" in listed.split(", ") or "echo" in listed
    assert "none" not in listed


def test_module_that_raises_shows_its_traceback(tmp_path: Path) -> None:
    source = (
        "def _configure():\n    raise ValueError('adapter needs SOME_API_KEY')\n\n_configure()\n"
    )
    code, output = run_until_exit(tmp_path, {"ADAPTER_MODULE": "adapter"}, {"adapter.py": source})
    assert code != 0
    assert "Traceback" in output
    assert "ValueError: adapter needs SOME_API_KEY" in output
    assert "adapter.py" in output and "_configure" in output


def test_module_importing_a_missing_dependency_names_it(tmp_path: Path) -> None:
    source = "import not_installed_dependency_xyz\n"
    code, output = run_until_exit(tmp_path, {"ADAPTER_MODULE": "adapter"}, {"adapter.py": source})
    assert code != 0
    assert "not_installed_dependency_xyz" in output
    assert "Traceback" in output


# In-process checks of the resolver itself (fast; no server).


def test_adapter_module_wins_over_runtime() -> None:
    cls = resolve_adapter_class("molecule_runtime.adapters.echo", "no-such-runtime")
    assert cls.name() == "echo"


def test_resolution_error_names_everything_tried() -> None:
    with pytest.raises(AdapterResolutionError) as err:
        resolve_adapter_class("nowhere_to_be_found", "echo")
    message = str(err.value)
    assert "nowhere_to_be_found" in message and "echo" in message


def test_console_script_finds_adapter_py_in_working_directory(tmp_path: Path) -> None:
    # The console script, unlike `python -m`, does not put the working directory on
    # sys.path: the template layout must work through it too.
    script = Path(sys.executable).parent / "molecule-runtime"
    assert script.is_file(), "the package is not installed with its console script"
    cwd = template_repo(tmp_path / "template")
    port = free_port()
    env = {
        **os.environ,
        "ADAPTER_MODULE": "adapter",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MOLECULE_DATA_DIR": str(tmp_path / "data"),
    }
    log_path = tmp_path / "server.log"
    proc = spawn([str(script)], log_path, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + 30
        body: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        assert body.get("adapter") == "probe", log_path.read_text()
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log_path.read_text()


def test_packaged_adapters_match_the_entry_points() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["molecule_runtime.adapters"]
    assert PACKAGED_ADAPTERS == declared
    for name in declared:
        assert resolve_adapter_class(None, name).name() == name


def test_unknown_runtime_error_lists_every_builtin() -> None:
    with pytest.raises(AdapterResolutionError) as err:
        resolve_adapter_class(None, "nope")
    listed = str(err.value).split("available built-ins: ", 1)[1]
    assert set(listed.split(", ")) == set(builtin_adapters()) >= {"echo", "langgraph"}

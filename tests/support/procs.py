"""Start and stop the processes a test owns (by PID / process group, never by pattern)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """Start a process in a session of its own (so `stop_process` can end its whole
    group), stdout and stderr appended to `log_path`.

    The parent closes its copy of the log at once: the child keeps writing to its own.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )


def stop_process(
    proc: subprocess.Popen,
    *,
    grace: float = 10.0,
    signum: signal.Signals = signal.SIGTERM,
    whole_group: bool = True,
) -> None:
    """`signum` (SIGTERM) to the process group we created, then SIGKILL to the group if
    it lingers past `grace`. `whole_group=False` sends the first signal to the leader
    alone, for servers (PostgreSQL) that shut their children down themselves."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if whole_group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def log_tail(path: Path, size: int = 8000) -> str:
    """The end of a process's log, for failure messages ("" before it wrote one)."""
    try:
        return path.read_text(errors="replace")[-size:]
    except FileNotFoundError:
        return ""


def kill_process(proc: subprocess.Popen) -> None:
    """SIGKILL: a crash, no clean-up code runs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class OwnedProcess:
    """A process a test helper started: `stop()` it cleanly or `kill()` it like a crash."""

    proc: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            kill_process(self.proc)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...),
    None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, `stat_fields`) of every process on the machine, for finding children and
    process-group members that a test did not start itself."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None:
                yield int(entry.name), fields


class ServerProcess(OwnedProcess):
    """A `molecule-runtime` process on 127.0.0.1 with its own data dir and log file."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        cwd: Path | None = None,
        command: str = "serve",
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.cwd = cwd or workdir
        self.command = command
        self.env = {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "MOLECULE_DATA_DIR": str(workdir / "data"),
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.proc = None
        self.log_path = workdir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, **self.env}
        env.pop("TEMPORAL_ADDRESS", None) if "TEMPORAL_ADDRESS" not in self.env else None
        self.proc = spawn(
            [sys.executable, "-m", "molecule_runtime", self.command],
            self.log_path,
            env=env,
            cwd=self.cwd,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0, path: str = "/readyz") -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return log_tail(self.log_path)


@contextlib.contextmanager
def running_server(
    workdir: Path, env: Mapping[str, str] | None = None, **kwargs: Any
) -> Iterator[ServerProcess]:
    """A started `ServerProcess`, stopped however the block ends: the body of the
    module-scoped server fixtures."""
    server = ServerProcess(workdir, env, **kwargs)
    try:
        yield server.start()
    finally:
        server.stop()

"""Start and stop the processes a test owns (by PID / process group, never by pattern)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen, *, grace: float = 10.0) -> None:
    """SIGTERM the process group we created, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def kill_process(proc: subprocess.Popen) -> None:
    """SIGKILL: a crash, no clean-up code runs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class ServerProcess:
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
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, **self.env}
        env.pop("TEMPORAL_ADDRESS", None) if "TEMPORAL_ADDRESS" not in self.env else None
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "molecule_runtime", self.command],
            cwd=self.cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self._log.close()

    def kill(self) -> None:
        if self.proc is not None:
            kill_process(self.proc)
            self._log.close()

"""Processes the benchmark owns: started in their own session, stopped by PID / process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support.procs import free_port, kill_process, stop_process

REPO = Path(__file__).resolve().parent.parent

# Settings of the caller's shell that would change what a server does.
_SCRUB = ("TEMPORAL_", "TASK_STORE_URL", "ADAPTER_", "RUNTIME", "MOLECULE_", "OTEL_", "WORKSPACE_ID")


class Proc:
    """A Python server process on 127.0.0.1 with its own log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], workdir: Path, *,
                 port: int | None = None) -> None:
        self.name = name
        self.argv = argv
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        self.env = {**base, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            kill_process(self.proc)


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]

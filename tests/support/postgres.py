"""A real PostgreSQL server owned by the tests: `initdb` + `postgres` on 127.0.0.1.

The server runs from Debian's `postgresql` package (scripts/ensure-postgres.sh
installs it). PostgreSQL refuses to run as root, so when the tests run as root
(CI does) the server runs as the `postgres` system user (or `nobody`) in a
temporary directory of its own, outside pytest's root-only 0700 tmp tree.
The server is stopped by its PID (it leads a process group of its own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import free_port, log_tail, spawn, stop_process

USER = "molecule"
# A password, not trust auth: the runtime must carry credentials in
# TASK_STORE_URL and keep them out of logs and /readyz.
PASSWORD = "pg-test-secret"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """Directory holding `initdb` and `postgres`, or None when PostgreSQL is not installed."""
    override = os.environ.get("MOLECULE_TEST_PG_BINDIR")
    if override:
        return Path(override)
    # Debian keeps the server binaries out of PATH (only wrappers for clients).
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(os.path.realpath(initdb)).parent
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; `database()` hands out fresh databases."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.account = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="molecule-pg-"))
        self.datadir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.proc: subprocess.Popen | None = None

    # ---- process -------------------------------------------------------

    def _popen_kwargs(self) -> dict:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> PostgresServer:
        if not self.datadir.exists():
            self._initdb()
        self._spawn()
        self._wait_ready(time.monotonic() + timeout)
        return self

    def _initdb(self) -> None:
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.account is not None:
            os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
        done = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.datadir),
                "-U", USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # a throw-away cluster: skip initdb's fsyncs
            ],
            capture_output=True,
            text=True,
            cwd=self.root,
            **self._popen_kwargs(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def _spawn(self) -> None:
        self.proc = spawn(
            [
                str(self.bindir / "postgres"),
                "-D", str(self.datadir),
                "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                # The socket lives in our own directory: /var/run/postgresql
                # may not exist or not be writable for this user.
                "-c", f"unix_socket_directories={self.root}",
                # Durability of the test cluster itself does not matter;
                # these keep the 2-core machine's disks out of the timings.
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ],
            self.log_path,
            cwd=self.root,
            **self._popen_kwargs(),
        )

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"postgres exited with {self.proc.returncode}:\n{self.log()}"
                    )
                # A thread of its own, so this also works under a running event loop.
                if pool.submit(asyncio.run, self._probe()).result():
                    return
                time.sleep(0.1)
        raise TimeoutError(f"postgres not ready:\n{self.log()}")

    async def _probe(self) -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(self.dsn("postgres"), timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        await conn.close()
        return True

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self, timeout: float = 20.0, *, remove: bool = True) -> None:
        """Fast shutdown (SIGINT) of the postmaster we started, SIGKILL of its group if it hangs.

        With remove=False the cluster stays on disk and `start()` brings it back
        on the same port (a database restart under a running runtime).
        """
        if self.proc is not None:
            # SIGINT to the postmaster alone: it stops its own children.
            stop_process(self.proc, grace=timeout, signum=signal.SIGINT, whole_group=False)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- databases -----------------------------------------------------

    def dsn(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def url(self, database: str) -> str:
        """The database as a TASK_STORE_URL."""
        return f"postgresql+asyncpg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """Create an empty database and return its TASK_STORE_URL (one per test: no shared rows)."""
        name = f"t_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            import asyncpg

            conn = await asyncpg.connect(self.dsn("postgres"), timeout=10)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, create()).result()
        return self.url(name)


# One cluster per pytest session, shared by every test module that asks for it
# (a session fixture defined in two modules would otherwise start two).
_shared: PostgresServer | None = None
_users = 0


@contextlib.contextmanager
def shared_postgres() -> Iterator[PostgresServer]:
    global _shared, _users
    if _shared is None:
        bindir = find_bindir()
        if bindir is None:
            import pytest

            pytest.skip(
                "PostgreSQL server binaries (initdb, postgres) not found: "
                "run scripts/ensure-postgres.sh (apt-get install postgresql)"
            )
        _shared = PostgresServer(bindir).start()
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0 and _shared is not None:
            _shared.stop()
            _shared = None

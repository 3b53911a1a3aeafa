"""Shared fixtures: a session-wide Temporal dev server, temporary workdirs, servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import console_page, find_browser, launched
from tests.support.postgres import PostgresServer, shared_postgres
from tests.support.procs import ServerProcess
from tests.support.temporal import TemporalDevServer


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(tmp_path_factory.mktemp("temporal")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start `molecule-runtime` processes; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, **kwargs) -> ServerProcess:
        workdir = kwargs.pop("workdir", None) or tmp_path / f"srv{len(started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        wait = kwargs.pop("wait", True)
        server = ServerProcess(workdir, env, **kwargs)
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium for the console tests of one module (skips without one)."""
    path, why_not = find_browser()
    if path is None:
        pytest.skip(why_not)
    with launched(path) as launched_browser:
        yield launched_browser


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh console page of `browser`, its screenshots in the test's tmp dir."""
    with console_page(browser, tmp_path) as opened:
        yield opened


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._molecule_exitstatus = exitstatus  # type: ignore[attr-defined]


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # The Temporal SDK's native threads occasionally crash the interpreter at
    # exit (temporalio/sdk-python#300). Leave with pytest's own status instead.
    status = getattr(config, "_molecule_exitstatus", None)
    if status is not None and os.environ.get("MOLECULE_TEST_HARD_EXIT", "1") == "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))

"""The tests' own Temporal dev server helper starts even when its port was taken."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.temporal import TemporalDevServer


def test_a_port_taken_before_the_server_binds_it_costs_a_retry_not_the_test(
    tmp_path: Path,
) -> None:
    # The port was free when picked, then another process took it: the server cannot
    # bind it and exits, while a connection to the port still succeeds (the other
    # process answers), so only the server's exit tells the attempt failed.
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", 0))
        taker.listen()
        taken = taker.getsockname()[1]
        server = TemporalDevServer(tmp_path)
        server.port = taken
        try:
            server.start(timeout=20)
            assert server.port != taken
            assert server.proc is not None and server.proc.poll() is None
            log = (tmp_path / "temporal.log").read_text()
            assert f"{taken}: bind: address already in use" in log
        finally:
            server.stop()


def test_a_caller_given_port_is_kept_and_the_failure_says_why(tmp_path: Path) -> None:
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", 0))
        taker.listen()
        taken = taker.getsockname()[1]
        server = TemporalDevServer(tmp_path, port=taken)
        try:
            server.start(timeout=10, attempts=2)
        except TimeoutError as failure:
            message = str(failure)
        else:
            server.stop()
            raise AssertionError("started on a port another process holds")
    assert message.count("exited with") == 2, message
    assert "address already in use" in message

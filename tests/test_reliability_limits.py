"""Request limits over real sockets: body size (413), slow bodies (408), slow headers (closed).

MOLECULE_MAX_REQUEST_BYTES and MOLECULE_REQUEST_TIMEOUT are lowered so the
limits are reached quickly; a normal request still succeeds afterwards.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.procs import ServerProcess, running_server
from tests.support.sse import A2A, message_json, post_sse, state_of

LIMIT = 64 * 1024
TIMEOUT = 1.5


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"MOLECULE_MAX_REQUEST_BYTES": str(LIMIT), "MOLECULE_REQUEST_TIMEOUT": str(TIMEOUT)}
    with running_server(tmp_path_factory.mktemp("limits"), env) as server:
        yield server


def send_body(text: str) -> bytes:
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message_json(text)}}
    return httpx.Request("POST", "http://x", json=body).content


def assert_serving(server: ServerProcess) -> None:
    reply = httpx.post(server.url + "/", content=send_body("still here"), headers=A2A, timeout=10)
    assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200


def test_body_at_the_limit_is_accepted(limited: ServerProcess) -> None:
    filler = "a" * (LIMIT - len(send_body("")))
    body = send_body(filler)
    assert len(body) == LIMIT
    reply = httpx.post(limited.url + "/", content=body, headers=A2A, timeout=30)
    assert reply.status_code == 200
    assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


@pytest.mark.parametrize("path", ["/", "/rest/message:send", "/rest/message:stream"])
def test_declared_oversize_body_gets_413(limited: ServerProcess, path: str) -> None:
    reply = httpx.post(
        limited.url + path, content=send_body("a" * LIMIT), headers=A2A, timeout=10
    )
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"] == "request_too_large"
    assert "MOLECULE_MAX_REQUEST_BYTES" in reply.json()["detail"]
    assert_serving(limited)


def test_chunked_oversize_body_gets_413_while_it_arrives(limited: ServerProcess) -> None:
    """No Content-Length: bytes are counted as they arrive; the server answers
    long before the client has sent everything (32 MiB, more than socket buffers hold)."""
    sent = 0
    total = 512 * LIMIT

    def body() -> Iterator[bytes]:
        nonlocal sent
        while sent < total:
            sent += LIMIT
            yield b" " * LIMIT

    try:
        reply = httpx.post(limited.url + "/", content=body(), headers=A2A, timeout=10)
        assert "content-length" not in reply.request.headers
        assert reply.status_code == 413, reply.text
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered and closed while we were still writing
    assert sent < total / 2
    assert_serving(limited)


def test_chunked_oversize_body_gets_413_raw(limited: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nA2A-Version: 1.0\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b" " * 4096
        answer = b""
        for _ in range(4 * LIMIT // len(chunk)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            # Read the answer as soon as there is one, before the server closes.
            if select.select([sock], [], [], 0.01)[0]:
                answer = sock.recv(200)
                break
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert_serving(limited)


def test_trickled_body_gets_408_and_frees_the_request(limited: ServerProcess) -> None:
    body = send_body("slow body")
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nA2A-Version: 1.0\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        started = time.monotonic()
        sock.settimeout(0.25)
        answer = b""
        for byte in body[:40]:  # one byte every 250 ms: ~10 s if never cut off
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            break
        elapsed = time.monotonic() - started
        # The head and the body can arrive in separate reads: read until the
        # server closes (it answers `connection: close`).
        sock.settimeout(5)
        while answer:
            try:
                more = sock.recv(4096)
            except OSError:
                break
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"MOLECULE_REQUEST_TIMEOUT" in answer
    # Never before the deadline; the upper bound only catches a hang (load delays the cut).
    assert TIMEOUT - 0.1 <= elapsed < TIMEOUT + 6
    assert_serving(limited)


@pytest.mark.parametrize("first_bytes", [b"", b"GET /healthz HTTP/1.1\r\n"])
def test_silent_or_trickled_headers_are_disconnected(
    limited: ServerProcess, first_bytes: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(first_bytes)
        started = time.monotonic()
        sock.settimeout(0.25)
        closed = False
        for _ in range(40):  # a header line every 250 ms: 10 s if never cut off
            try:
                if first_bytes:
                    sock.sendall(b"X-Slow: 1\r\n")
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed
    # Never before the deadline; the upper bound only catches a hang (load delays the cut).
    assert TIMEOUT - 0.1 <= elapsed < TIMEOUT + 6
    assert_serving(limited)


def test_keep_alive_connection_survives_between_requests(limited: ServerProcess) -> None:
    """The header deadline restarts after each response, so keep-alive reuse works."""
    with httpx.Client(base_url=limited.url, timeout=10) as http:
        for _ in range(3):
            assert http.get("/healthz").status_code == 200
            time.sleep(TIMEOUT / 2)


def test_sse_stream_longer_than_the_timeout_is_not_cut(tmp_path) -> None:
    """The deadlines cover receiving the request, not the response."""
    env = {"MOLECULE_REQUEST_TIMEOUT": "1", "ADAPTER_OPTIONS": '{"delay": 0.2}'}
    with running_server(tmp_path, env) as server:
        message = message_json(" ".join(f"w{i}" for i in range(12)))  # ~2.4 s
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": {"message": message}}
        started = time.monotonic()
        _, events = post_sse(server.url + "/", body, headers=A2A, timeout=30)
        assert time.monotonic() - started > 2
        assert state_of(events[-1].get("result", {})) == "TASK_STATE_COMPLETED"

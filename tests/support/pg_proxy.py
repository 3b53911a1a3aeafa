"""A TCP proxy in front of a real PostgreSQL server that can play its outages.

The runtime is pointed at the proxy's port. Modes:

- `forward`: bytes go to the real server and back;
- `starting_up`: every new connection is answered with the ErrorResponse
  PostgreSQL sends during crash recovery (SQLSTATE 57P03, "the database system
  is starting up"), then closed;
- `refuse`: the listening socket is closed (connection refused).

`cut()` drops every open forwarded connection, as a crashed server would.
Runs in the test's event loop; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Literal

Mode = Literal["forward", "starting_up", "refuse"]


def error_response(sqlstate: str, message: str) -> bytes:
    """A protocol-3 ErrorResponse message."""
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


STARTING_UP = error_response("57P03", "the database system is starting up")
_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104


class PgProxy:
    def __init__(self, upstream_port: int, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.mode: Mode = "forward"
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.refused_starting_up = 0

    def url(self, store_url: str, real_port: int) -> str:
        """`store_url` (pointing at the real server) pointed at the proxy instead."""
        return store_url.replace(f":{real_port}/", f":{self.port}/")

    async def start(self) -> PgProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def set_mode(self, mode: Mode) -> None:
        if mode == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "refuse" and self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.mode = mode
        if mode != "forward":
            await self.cut()

    async def cut(self) -> None:
        """Drop every forwarded connection."""
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.cancel()
        for pipe in pipes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pipe

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            if self.mode == "starting_up":
                await self._answer_starting_up(reader, writer)
            else:
                await self._forward(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pipes.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer_starting_up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The client may first ask for SSL or GSS encryption: say no, then read
        # its startup packet and refuse it as a recovering server does.
        while True:
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            packet = await reader.readexactly(length - 4)
            code = struct.unpack("!I", packet[:4])[0] if len(packet) >= 4 else 0
            if code in (_SSL_REQUEST, _GSS_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            break
        self.refused_starting_up += 1
        writer.write(STARTING_UP)
        await writer.drain()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

        pumps = {
            asyncio.ensure_future(pump(reader, up_writer)),
            asyncio.ensure_future(pump(up_reader, writer)),
        }
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

"""Switching an aiohttp request to a stream protocol, and the ``spdy.Wire`` under each.

aiohttp upgrades only to WebSocket itself. For ``Upgrade: SPDY/3.1`` the handler answers
``101`` and then takes the connection: the transport gets a plain stream protocol (aiohttp
no longer parses what follows as HTTP) and is handed back closed when the session ends,
so aiohttp neither keeps it alive nor sees a byte of SPDY.

A WebSocket carries SPDY too (kubectl's port-forward tunnel, subprotocol
``SPDY/3.1+portforward.k8s.io``): each binary message is a run of the session's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping

from aiohttp import WSMsgType, web

SPDY = "SPDY/3.1"
_READ = 256 * 1024


def is_spdy(headers: Mapping[str, str]) -> bool:
    return headers.get("Upgrade", "").lower() == SPDY.lower() and \
        "upgrade" in headers.get("Connection", "").lower()


def negotiate(offered: Iterable[str], supported: tuple[str, ...]) -> str | None:
    """``httpstream.Handshake``: the first of the client's ``X-Stream-Protocol-Version``
    values (repeated headers or comma-separated) the server supports."""
    for header in offered:
        for value in header.split(","):
            if value.strip() in supported:
                return value.strip()
    return None


class RawWire:
    """The upgraded TCP (TLS) connection itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> bytes:
        try:
            return await self.reader.read(_READ)
        except (OSError, ConnectionError):
            return b""

    async def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


class WebSocketWire:
    """SPDY bytes in the binary messages of a WebSocket."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._closing: asyncio.Task[bool] | None = None

    async def read(self) -> bytes:
        while True:
            message = await self.ws.receive()
            if message.type == WSMsgType.BINARY:
                if message.data:
                    return bytes(message.data)
            elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                  WSMsgType.ERROR):
                return b""

    async def write(self, data: bytes) -> None:
        if self.ws.closed:
            raise ConnectionResetError("the WebSocket is closed")
        await self.ws.send_bytes(data)

    def close(self) -> None:
        if not self.ws.closed and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.ws.close())


@contextlib.asynccontextmanager
async def spdy_upgrade(request: web.Request, headers: Mapping[str, str]) -> AsyncIterator[
        tuple[RawWire | None, web.StreamResponse]]:
    """Answer ``101 Switching Protocols`` (with ``headers``) and lend the connection as a
    ``RawWire`` (None when the client has already gone), with the response the handler
    returns."""
    response = web.StreamResponse(status=101, reason="Switching Protocols",
                                  headers={"Connection": "Upgrade", "Upgrade": SPDY,
                                           **headers})
    transport = request.transport
    if transport is not None:
        transport.pause_reading()  # the client's first frames are not HTTP: hold them
    await response.prepare(request)
    if transport is None or transport.is_closing():
        yield None, response
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_READ, loop=loop)
    stream_protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    http_protocol = transport.get_protocol()
    transport.set_protocol(stream_protocol)
    stream_protocol.connection_made(transport)
    if not transport.is_reading():
        transport.resume_reading()
    try:
        yield RawWire(reader, asyncio.StreamWriter(transport, stream_protocol, reader,
                                                   loop)), response
    finally:
        transport.set_protocol(http_protocol)
        response.force_close()
        transport.close()

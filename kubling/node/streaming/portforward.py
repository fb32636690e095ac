"""Port-forward: TCP connections from the client to ports on the pod's loopback.

Over SPDY (the raw ``Upgrade: SPDY/3.1`` with ``portforward.k8s.io``, or tunnelled in a
WebSocket as ``SPDY/3.1+portforward.k8s.io``) each forwarded connection is a pair of
streams sharing a ``requestID`` header: ``data`` carries the bytes, ``error`` carries one
message if the connection could not be made or failed. Both name the ``port``. A pair
that does not complete within ``STREAM_CREATION_TIMEOUT`` is dropped with an error, as
the kubelet does.

The older WebSocket protocol (``v4.channel.k8s.io``, the Python client's) forwards one
connection per port named in the query: port ``i`` has data channel ``2i`` and error
channel ``2i+1``, and each channel's first message is the port number (two bytes, little
endian).

Connections are made by a ``Dialer``: ``nsdial.dial`` in the pod's network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import struct
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from kubling.node.streaming import StreamingError, spdy

log = logging.getLogger("kubling.node.streaming.portforward")

SPDY_PROTOCOL = "portforward.k8s.io"
WEBSOCKET_TUNNEL = "SPDY/3.1+portforward.k8s.io"
WEBSOCKET_CHANNELS = "v4.channel.k8s.io"
STREAM_CREATION_TIMEOUT = 30.0
_CHUNK = 64 * 1024

Dialer = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclasses.dataclass
class _Pair:
    request_id: str
    data: spdy.Stream | None = None
    error: spdy.Stream | None = None
    timer: asyncio.TimerHandle | None = None


class PortForwarder:
    """Forwards the connections of one client session to one pod."""

    def __init__(self, dial: Dialer, *, pod: str, uid: str) -> None:
        self.dial = dial
        self.pod = pod
        self.uid = uid
        self._tasks: set[asyncio.Task[None]] = set()

    # -- SPDY --------------------------------------------------------------------------

    async def serve_spdy(self, wire: spdy.Wire) -> None:
        """Run the session until the client leaves; every forwarded connection ends too."""
        pairs: dict[str, _Pair] = {}
        session: spdy.Session

        def on_stream(stream: spdy.Stream) -> bool:
            kind = stream.headers.get("streamtype", "")
            port = stream.headers.get("port", "")
            if kind not in ("data", "error") or not port.isdigit() or \
                    not 0 < int(port) < 65536:
                return False  # the kubelet's httpStreamReceived refuses it
            request_id = stream.headers.get("requestid") or str(
                stream.id if kind == "error" else stream.id - 2)
            pair = pairs.get(request_id)
            if pair is None:
                pair = pairs[request_id] = _Pair(request_id)
                pair.timer = asyncio.get_running_loop().call_later(
                    STREAM_CREATION_TIMEOUT,
                    lambda: self._spawn(self._expire(session, pairs, pair)))
            if getattr(pair, kind) is not None:
                return False
            setattr(pair, kind, stream)
            if pair.data is not None and pair.error is not None:
                del pairs[request_id]
                if pair.timer is not None:
                    pair.timer.cancel()
                self._spawn(self._forward_pair(session, pair.data, pair.error))
            return True

        session = spdy.Session(wire, on_stream)
        try:
            await session.run()
        finally:
            for pair in pairs.values():
                if pair.timer is not None:
                    pair.timer.cancel()
            await self._stop_all()
            await session.close()

    async def _expire(self, session: spdy.Session, pairs: dict[str, _Pair],
                      pair: _Pair) -> None:
        pairs.pop(pair.request_id, None)
        for stream in (pair.error, pair.data):
            if stream is not None:
                if stream is pair.error:
                    with contextlib.suppress(ConnectionError):
                        await stream.write(f"(request={pair.request_id}) timed out waiting "
                                           "for streams".encode())
                await stream.close()
                session.forget(stream)

    async def _forward_pair(self, session: spdy.Session, data: spdy.Stream,
                            error: spdy.Stream) -> None:
        port = int(data.headers["port"])
        try:
            try:
                reader, writer = await self.dial(port)
            except OSError as err:
                with contextlib.suppress(ConnectionError):
                    await error.write(self._error_message(port, err).encode())
                return
            try:
                await _splice(data.read, data.write, data.close, reader, writer)
            finally:
                writer.close()
        finally:
            for stream in (error, data):
                await stream.close()
                session.forget(stream)

    # -- the WebSocket channel protocol ----------------------------------------------

    async def serve_channels(self, ws: web.WebSocketResponse, ports: list[int]) -> None:
        writers: dict[int, asyncio.StreamWriter] = {}
        try:
            for index, port in enumerate(ports):
                prefix = struct.pack("<H", port)
                await ws.send_bytes(bytes((2 * index,)) + prefix)
                await ws.send_bytes(bytes((2 * index + 1,)) + prefix)
            for index, port in enumerate(ports):
                try:
                    reader, writer = await self.dial(port)
                except OSError as err:
                    await ws.send_bytes(bytes((2 * index + 1,))
                                        + self._error_message(port, err).encode())
                    continue
                writers[index] = writer
                self._spawn(self._channel_out(ws, index, reader))
            async for message in ws:
                if message.type != WSMsgType.BINARY or len(message.data) < 2:
                    continue
                channel = message.data[0]
                writer_for = writers.get(channel // 2)
                if channel % 2 == 0 and writer_for is not None:
                    writer_for.write(message.data[1:])
                    with contextlib.suppress(ConnectionError):
                        await writer_for.drain()
        finally:
            for writer in writers.values():
                writer.close()
            await self._stop_all()
            await ws.close()

    async def _channel_out(self, ws: web.WebSocketResponse, index: int,
                           reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(_CHUNK):
                await ws.send_bytes(bytes((2 * index,)) + data)
        await ws.close()  # the pod closed the connection: so does the client's side

    # -- shared --------------------------------------------------------------------------

    def _error_message(self, port: int, err: OSError) -> str:
        return f"error forwarding port {port} to pod {self.pod}, uid {self.uid}: {err}"

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("port-forward to pod %s failed: %s", self.pod, task.exception())

    async def _stop_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _splice(read: Callable[[], Awaitable[bytes]],
                  write: Callable[[bytes], Awaitable[None]],
                  finish: Callable[[], Awaitable[None]],
                  reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy a stream and a TCP connection into each other. Each side's end is passed on
    (a FIN from the client half-closes the socket; the pod's EOF finishes the stream);
    done when the pod's side has ended."""

    async def inbound() -> None:
        while data := await read():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def outbound() -> None:
        while data := await reader.read(_CHUNK):
            await write(data)
        await finish()

    client = asyncio.create_task(inbound())
    try:
        with contextlib.suppress(ConnectionError, OSError):
            await outbound()
    finally:
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)


def ports_of(values: list[str]) -> list[int]:
    """The ports of a WebSocket channel request (``port`` or ``ports``, repeated or
    comma-separated); StreamingError for one that is not a port."""
    ports: list[int] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            if not part.strip().isdigit() or not 0 < int(part) < 65536:
                raise StreamingError(400, f'unable to parse "{part}" as a port')
            ports.append(int(part))
    if not ports:
        raise StreamingError(400, "query parameter \"port\" is required")
    return ports

"""SPDY/3.1 framing and the server half of a session, as the kubelet's streams use it
(``k8s.io/apimachinery/pkg/util/httpstream/spdy`` over ``moby/spdystream``).

A frame is eight bytes of header and a payload. Control frames set the top bit and carry
the version (3) and a type; data frames carry a 31-bit stream id. Header blocks (in
SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams primed with the SPDY/3 dictionary, one
compression context per direction for the whole session, each block ending in a sync
flush. The client opens every stream (odd ids) with headers naming it — ``streamType``
for exec, plus ``port`` and ``requestID`` for port-forward — and the server answers each
with a SYN_REPLY, or a RST_STREAM when it refuses it. Either side ends its half of a
stream with the FIN flag. Like spdystream, flow control is not enforced: WINDOW_UPDATE and
SETTINGS are read and ignored, and back-pressure comes from the connection itself.

The session is transport-neutral: a ``Wire`` is the raw upgraded connection or the
binary messages of a WebSocket (kubectl's port-forward tunnel).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import struct
import zlib
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("kubling.node.streaming.spdy")

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)
FLAG_FIN = 0x01
#: RST_STREAM status codes.
PROTOCOL_ERROR, REFUSED_STREAM, CANCEL = 1, 3, 5
#: GOAWAY status codes.
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR = 0, 1
#: Largest DATA payload sent in one frame.
MAX_DATA = 32 * 1024
#: Largest decompressed header block accepted (a bound against a hostile stream).
MAX_HEADER_BLOCK = 256 * 1024
_QUEUE_FRAMES = 64


def _dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): 64
    length-prefixed words (``_`` stands for a space), then a run of common values."""
    words = [w.replace("_", " ") for w in (
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host "
        "if-match if-modified-since if-none-match if-range if-unmodified-since "
        "last-modified location max-forwards pragma proxy-authenticate "
        "proxy-authorization range referer retry-after server te trailer "
        "transfer-encoding upgrade user-agent vary via warning www-authenticate method get "
        "status 200_OK version HTTP/1.1 url public set-cookie keep-alive origin").split()]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server "
        "Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug "
        "Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,"
        "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset="
        "iso-8859-1,utf-,*,enq=0.")
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


DICTIONARY = _dictionary()


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3; the session ends with a GOAWAY."""


class Wire(Protocol):
    """The bytes under a session."""

    async def read(self) -> bytes:
        """The next bytes; ``b""`` once the peer is gone."""
        ...

    async def write(self, data: bytes) -> None:
        """Send, waiting while the peer is slow; raises ConnectionError once gone."""
        ...

    def close(self) -> None: ...


# -- frames ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame: ``control`` frames have a ``type``; data frames a ``stream_id``."""

    control: bool
    type: int
    flags: int
    stream_id: int
    payload: bytes


class FrameReader:
    """Splits bytes as they arrive into frames (a frame may span reads)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            flags = second >> 24
            if first & 0x80000000:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise ProtocolError(f"unsupported SPDY version {version}")
                frame_type = first & 0xFFFF
                stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF \
                    if len(payload) >= 4 else 0
                frames.append(Frame(True, frame_type, flags, stream_id, payload))
            else:
                frames.append(Frame(False, 0, flags, first & 0x7FFFFFFF, payload))
        return frames


def control_frame(frame_type: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type,
                       (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


class HeaderCodec:
    """The two zlib contexts of a session (one per direction)."""

    def __init__(self) -> None:
        self._compress = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9,
                                          zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._decompress = zlib.decompressobj(zdict=DICTIONARY)

    def encode(self, headers: dict[str, str]) -> bytes:
        block = struct.pack(">I", len(headers))
        for name, value in headers.items():
            for part in (name.lower().encode(), value.encode()):
                block += struct.pack(">I", len(part)) + part
        return self._compress.compress(block) + self._compress.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, data: bytes) -> dict[str, str]:
        """Header names lower-cased; repeated values joined by NUL, as on the wire."""
        try:
            block = self._decompress.decompress(data, MAX_HEADER_BLOCK)
        except zlib.error as err:
            raise ProtocolError(f"bad header block: {err}") from None
        if self._decompress.unconsumed_tail:
            raise ProtocolError("header block too large")
        try:
            (count,), position, headers = struct.unpack_from(">I", block), 4, {}
            for _ in range(count):
                parts = []
                for _ in range(2):
                    (size,) = struct.unpack_from(">I", block, position)
                    parts.append(block[position + 4:position + 4 + size])
                    if len(parts[-1]) != size:
                        raise ProtocolError("truncated header block")
                    position += 4 + size
                headers[parts[0].decode(errors="replace").lower()] = \
                    parts[1].decode(errors="replace")
        except struct.error:
            raise ProtocolError("truncated header block") from None
        return headers


# -- the session -------------------------------------------------------------------------


class Stream:
    """One stream the client opened. ``read`` returns ``b""`` once the client has
    finished its half (or reset the stream, or the session ended)."""

    def __init__(self, session: Session, stream_id: int, headers: dict[str, str]) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue(_QUEUE_FRAMES)
        self.remote_done = False
        self.local_done = False
        self.reset = False

    async def read(self) -> bytes:
        if self.remote_done and self._incoming.empty():
            return b""
        return await self._incoming.get()

    async def write(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_DATA):
            if self.local_done or self.reset:
                raise ConnectionResetError(f"stream {self.id} is closed")
            await self.session.send(data_frame(self.id, 0, data[start:start + MAX_DATA]))

    async def close(self) -> None:
        """Finish our half (an empty DATA frame with FIN)."""
        if not self.local_done and not self.reset:
            self.local_done = True
            with contextlib.suppress(ConnectionError):
                await self.session.send(data_frame(self.id, FLAG_FIN, b""))

    async def _deliver(self, data: bytes, fin: bool) -> None:
        if self.remote_done:
            return
        if data:
            await self._incoming.put(data)
        if fin:
            self._end()

    def _end(self) -> None:
        if not self.remote_done:
            self.remote_done = True
            with contextlib.suppress(asyncio.QueueFull):
                self._incoming.put_nowait(b"")


#: Called for each new stream; False refuses it (RST_STREAM), True answers a SYN_REPLY.
StreamHandler = Callable[[Stream], bool]


class Session:
    """The server side of one SPDY connection. ``run`` reads until the peer is gone, a
    GOAWAY arrives, a protocol error, or ``close``; every stream then reads its end."""

    def __init__(self, wire: Wire, on_stream: StreamHandler) -> None:
        self.wire = wire
        self.on_stream = on_stream
        self.streams: dict[int, Stream] = {}
        self._codec = HeaderCodec()
        self._write_lock = asyncio.Lock()
        self._last_stream = 0
        self._closed = False

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("the SPDY session is closed")
        async with self._write_lock:
            await self.wire.write(frame)

    async def _send_headers(self, frame_type: int, flags: int, stream_id: int,
                            headers: dict[str, str]) -> None:
        # Compression state must advance in the order the blocks go out: both under the lock.
        if self._closed:
            raise ConnectionResetError("the SPDY session is closed")
        async with self._write_lock:
            block = self._codec.encode(headers)
            await self.wire.write(control_frame(frame_type, flags,
                                                struct.pack(">I", stream_id) + block))

    async def run(self) -> None:
        reader = FrameReader()
        try:
            while not self._closed:
                data = await self.wire.read()
                if not data:
                    break
                for frame in reader.feed(data):
                    if not await self._handle(frame):
                        return
        except ProtocolError as err:
            log.debug("SPDY protocol error: %s", err)
            with contextlib.suppress(ConnectionError):
                await self.send(control_frame(GOAWAY, 0, struct.pack(
                    ">II", self._last_stream, GOAWAY_PROTOCOL_ERROR)))
        except ConnectionError:
            pass
        finally:
            self._closed = True
            for stream in self.streams.values():
                stream._end()

    async def _handle(self, frame: Frame) -> bool:
        """Act on one frame; False ends the session."""
        if not frame.control:
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                await stream._deliver(frame.payload, bool(frame.flags & FLAG_FIN))
            return True
        if frame.type == SYN_STREAM:
            await self._syn_stream(frame)
        elif frame.type == RST_STREAM:
            stream = self.streams.pop(frame.stream_id, None)
            if stream is not None:
                stream.reset = True
                stream._end()
        elif frame.type == PING:
            if len(frame.payload) != 4:
                raise ProtocolError("bad PING frame")
            await self.send(control_frame(PING, 0, frame.payload))
        elif frame.type == GOAWAY:
            return False
        elif frame.type == HEADERS:
            self._codec.decode(frame.payload[4:])  # keeps the zlib context in step
        elif frame.type not in (SETTINGS, WINDOW_UPDATE, SYN_REPLY):
            raise ProtocolError(f"unknown control frame type {frame.type}")
        return True

    async def _syn_stream(self, frame: Frame) -> None:
        if len(frame.payload) < 10:
            raise ProtocolError("bad SYN_STREAM frame")
        headers = self._codec.decode(frame.payload[10:])
        stream_id = frame.stream_id
        if stream_id % 2 == 0 or stream_id <= self._last_stream:
            await self.send(control_frame(RST_STREAM, 0,
                                          struct.pack(">II", stream_id, PROTOCOL_ERROR)))
            return
        self._last_stream = stream_id
        stream = Stream(self, stream_id, headers)
        if frame.flags & FLAG_FIN:
            stream._end()
        if not self.on_stream(stream):
            await self.send(control_frame(RST_STREAM, 0,
                                          struct.pack(">II", stream_id, REFUSED_STREAM)))
            return
        self.streams[stream_id] = stream
        await self._send_headers(SYN_REPLY, 0, stream_id, {})

    async def close(self) -> None:
        """Say GOAWAY and drop the connection (every stream's read ends)."""
        if not self._closed:
            with contextlib.suppress(ConnectionError):
                await self.send(control_frame(GOAWAY, 0, struct.pack(
                    ">II", self._last_stream, GOAWAY_OK)))
        self._closed = True
        for stream in self.streams.values():
            stream._end()
        self.wire.close()

    def forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)

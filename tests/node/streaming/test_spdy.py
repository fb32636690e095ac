"""SPDY/3.1 framing and the server session, against an in-memory wire playing kubectl."""

from __future__ import annotations

import asyncio
import hashlib
import struct

import pytest

from kubling.node.streaming import spdy


class MemoryWire:
    """The client's end: ``sent`` is what the server wrote; ``feed`` what the client says."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent = bytearray()
        self.closed = False

    async def read(self) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.sent += data

    def close(self) -> None:
        self.closed = True
        self.incoming.put_nowait(b"")

    def feed(self, data: bytes) -> None:
        self.incoming.put_nowait(data)


class Client:
    """Frames as kubectl's spdystream writes them (its own compression context)."""

    def __init__(self) -> None:
        self.codec = spdy.HeaderCodec()
        self.reply_codec = spdy.HeaderCodec()

    def syn_stream(self, stream_id: int, headers: dict[str, str], *, fin: bool = False) -> bytes:
        payload = struct.pack(">IIH", stream_id, 0, 0) + self.codec.encode(headers)
        return spdy.control_frame(spdy.SYN_STREAM, spdy.FLAG_FIN if fin else 0, payload)

    def frames(self, data: bytes) -> list[spdy.Frame]:
        return spdy.FrameReader().feed(data)


def test_the_dictionary_is_spdy3s() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02")


def test_header_blocks_share_one_compression_context() -> None:
    sender, receiver = spdy.HeaderCodec(), spdy.HeaderCodec()
    blocks = [sender.encode({"streamType": "data", "port": str(80 + i), "requestID": str(i)})
              for i in range(3)]
    decoded = [receiver.decode(block) for block in blocks]
    assert decoded[2] == {"streamtype": "data", "port": "82", "requestid": "2"}
    assert len(blocks[2]) < len(blocks[0])  # the context remembers earlier blocks


def test_frames_split_across_reads() -> None:
    data = spdy.data_frame(3, spdy.FLAG_FIN, b"hello") + spdy.control_frame(
        spdy.PING, 0, struct.pack(">I", 1))
    reader = spdy.FrameReader()
    assert reader.feed(data[:6]) == []
    frames = reader.feed(data[6:])
    first = frames[0]
    assert (first.control, first.stream_id, first.flags, first.payload) == (
        False, 3, spdy.FLAG_FIN, b"hello")
    assert frames[1].control and frames[1].type == spdy.PING


def test_a_wrong_version_is_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameReader().feed(struct.pack(">HHI", 0x8002, 1, 0))


def test_a_stream_is_answered_read_and_written() -> None:
    async def scenario() -> None:
        wire, client, accepted = MemoryWire(), Client(), []

        def on_stream(stream: spdy.Stream) -> bool:
            accepted.append(stream)
            return stream.headers.get("streamtype") == "stdin"

        session = spdy.Session(wire, on_stream)
        running = asyncio.create_task(session.run())
        wire.feed(client.syn_stream(1, {"streamType": "stdin"}))
        wire.feed(client.syn_stream(3, {"streamType": "bogus"}))
        wire.feed(spdy.data_frame(1, 0, b"abc") + spdy.data_frame(1, spdy.FLAG_FIN, b"d"))
        wire.feed(spdy.control_frame(spdy.PING, 0, struct.pack(">I", 7)))
        await asyncio.sleep(0.01)
        assert len(accepted) == 2
        stream = accepted[0]
        assert await stream.read() == b"abc"
        assert await stream.read() == b"d"
        assert await stream.read() == b""
        await stream.write(b"x" * (spdy.MAX_DATA + 1))
        await stream.close()
        frames = client.frames(bytes(wire.sent))
        reply = frames[0]
        assert (reply.type, reply.stream_id) == (spdy.SYN_REPLY, 1)
        assert client.reply_codec.decode(reply.payload[4:]) == {}
        reset = frames[1]
        assert reset.type == spdy.RST_STREAM and struct.unpack(">II", reset.payload) == (
            3, spdy.REFUSED_STREAM)
        assert frames[2].type == spdy.PING and frames[2].payload == struct.pack(">I", 7)
        data = [f for f in frames if not f.control]
        assert [len(f.payload) for f in data] == [spdy.MAX_DATA, 1, 0]
        assert data[-1].flags == spdy.FLAG_FIN
        wire.feed(b"")
        await running
        assert await stream.read() == b""

    asyncio.run(scenario())


@pytest.mark.parametrize("garbage", [
    struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, 3) + b"bad",  # too short for its ids
    struct.pack(">HHI", 0x8003, 99, 0),  # no such control frame
    struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, 14) + struct.pack(">IIH", 1, 0, 0)
    + b"nozlib",  # a header block that is not zlib
])
def test_malformed_input_ends_the_session_with_goaway(garbage: bytes) -> None:
    async def scenario() -> None:
        wire = MemoryWire()
        session = spdy.Session(wire, lambda stream: True)
        wire.feed(garbage)
        await asyncio.wait_for(session.run(), 5)
        frames = spdy.FrameReader().feed(bytes(wire.sent))
        assert frames[-1].type == spdy.GOAWAY
        assert struct.unpack(">II", frames[-1].payload)[1] == spdy.GOAWAY_PROTOCOL_ERROR

    asyncio.run(scenario())

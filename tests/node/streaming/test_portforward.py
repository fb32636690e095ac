"""Port-forward stream pairs over an in-memory SPDY wire, to a local echo server."""

from __future__ import annotations

import asyncio
import struct

import pytest

from kubling.node.streaming import StreamingError, portforward, spdy
from tests.node.streaming.test_spdy import Client, MemoryWire


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def stream_data(wire: MemoryWire, stream_id: int) -> tuple[bytes, bool]:
    frames = [f for f in spdy.FrameReader().feed(bytes(wire.sent))
              if not f.control and f.stream_id == stream_id]
    return b"".join(f.payload for f in frames), any(f.flags & spdy.FLAG_FIN for f in frames)


def test_a_pair_is_forwarded_and_a_refusal_reported() -> None:
    async def scenario() -> None:
        server, port = await echo_server()
        wire, client = MemoryWire(), Client()

        async def dial(wanted: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            if wanted != 80:
                raise ConnectionRefusedError(111, "connect: connection refused")
            return await asyncio.open_connection("127.0.0.1", port)

        forwarder = portforward.PortForwarder(dial, pod="web", uid="u-1")
        running = asyncio.create_task(forwarder.serve_spdy(wire))
        for stream_id, kind, port_header, request in ((1, "error", "80", "0"),
                                                       (3, "data", "80", "0"),
                                                       (5, "error", "81", "1"),
                                                       (7, "data", "81", "1")):
            wire.feed(client.syn_stream(stream_id, {"streamType": kind, "port": port_header,
                                                    "requestID": request}))
        wire.feed(spdy.data_frame(3, spdy.FLAG_FIN, b"hello"))
        for _ in range(100):
            if stream_data(wire, 3)[1] and stream_data(wire, 5)[1]:
                break
            await asyncio.sleep(0.02)
        assert stream_data(wire, 3) == (b"HELLO", True)
        assert stream_data(wire, 1) == (b"", True)
        message, finished = stream_data(wire, 5)
        assert finished
        assert message.decode().startswith("error forwarding port 81 to pod web, uid u-1: ")
        wire.feed(b"")
        await asyncio.wait_for(running, 5)
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_streams_without_a_port_are_refused() -> None:
    async def scenario() -> None:
        wire, client = MemoryWire(), Client()

        async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            raise AssertionError("never dialled")

        running = asyncio.create_task(
            portforward.PortForwarder(dial, pod="p", uid="u").serve_spdy(wire))
        wire.feed(client.syn_stream(1, {"streamType": "data"}))
        wire.feed(client.syn_stream(3, {"streamType": "data", "port": "0"}))
        await asyncio.sleep(0.02)
        wire.feed(b"")
        await asyncio.wait_for(running, 5)
        resets = [struct.unpack(">II", f.payload)[0]
                  for f in spdy.FrameReader().feed(bytes(wire.sent))
                  if f.control and f.type == spdy.RST_STREAM]
        assert resets == [1, 3]

    asyncio.run(scenario())


def test_ports_of_the_channel_protocol() -> None:
    assert portforward.ports_of(["80,8080", "9"]) == [80, 8080, 9]
    with pytest.raises(StreamingError):
        portforward.ports_of(["http"])
    with pytest.raises(StreamingError):
        portforward.ports_of([])

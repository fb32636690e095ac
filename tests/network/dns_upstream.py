"""A tiny upstream resolver for the cluster DNS tests, on UDP and TCP of one local port.

It knows a few names, counts what it is asked, and answers ``big.example.org`` TXT with
a truncated UDP reply (so the forwarder must retry over TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord  # type: ignore[import-untyped,unused-ignore]

from kubling.network.dns.transport import bind_pair

ANSWERS = {
    ("example.org", QTYPE.A): [A("192.0.2.1")],
    ("external.example.org", QTYPE.A): [A("192.0.2.7")],
    ("big.example.org", QTYPE.TXT): [TXT("x" * 200) for _ in range(5)],
}


class FakeUpstream:
    def __init__(self) -> None:
        self.queries: list[tuple[str, int, str]] = []  # (name, qtype, "udp" | "tcp")
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None

    def answer(self, data: bytes, transport: str) -> bytes:
        request = DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append((name, request.q.qtype, transport))
        reply = request.reply(ra=1, aa=1)
        rdatas = ANSWERS.get((name, request.q.qtype))
        if rdatas is None:
            reply.header.rcode = RCODE.NXDOMAIN
        for rdata in rdatas or []:
            reply.add_answer(RR(request.q.qname, request.q.qtype, ttl=60, rdata=rdata))
        data = reply.pack()
        if transport == "udp" and len(data) > 512:
            reply.rr = []
            reply.header.tc = 1
            data = reply.pack()
        return bytes(data)

    def count(self, name: str) -> int:
        return sum(1 for asked, _, _ in self.queries if asked == name)


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(self.upstream.answer(data, "udp"), addr)


@contextlib.asynccontextmanager
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    udp, tcp = bind_pair("127.0.0.1", 0)
    upstream.port = udp.getsockname()[1]

    async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            out = upstream.answer(await reader.readexactly(length), "tcp")
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(upstream), sock=udp)
    server = await asyncio.start_server(serve_tcp, sock=tcp)
    try:
        yield upstream
    finally:
        transport.close()
        server.close()

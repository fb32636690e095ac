"""Forwarding to upstream resolvers: UDP first, TCP when the answer was truncated.

Upstreams are tried in order (as glibc does with ``nameserver`` lines); an upstream that
times out, cannot be reached or answers SERVFAIL/REFUSED makes way for the next, and when
none answers the caller gets :class:`ForwardError` and replies SERVFAIL. Every query goes
out with a fresh random ID on its own connected socket, and an answer whose ID or question
does not match is ignored, so stray or spoofed datagrams cannot be taken for answers.

The default upstreams are the host's (``/etc/resolv.conf``). The server runs in the host's
network namespace, so a loopback stub such as systemd-resolved's 127.0.0.53 is reachable and
kept; only addresses the cluster DNS itself listens on are dropped, so that it never
forwards to itself. If nothing remains, systemd-resolved's list of real upstreams
(``/run/systemd/resolve/resolv.conf``) is used, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dnslib import RCODE, DNSError, DNSRecord  # type: ignore[import-untyped,unused-ignore]

log = logging.getLogger(__name__)

Address = tuple[str, int]

RESOLV_CONF = Path("/etc/resolv.conf")
SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")


class ForwardError(Exception):
    """No upstream gave a usable answer."""


def nameservers(path: Path) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf (IPv6 zone suffixes dropped)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = fields[1].split("%", 1)[0]
            try:
                found.append(str(ipaddress.ip_address(address)))
            except ValueError:
                continue
    return found


def is_self(upstream: Address, listen: Iterable[Address]) -> bool:
    """True if ``upstream`` would reach one of our own listening sockets."""
    host, port = upstream
    ip = ipaddress.ip_address(host)
    for listen_host, listen_port in listen:
        if port != listen_port:
            continue
        listen_ip = ipaddress.ip_address(listen_host or "0.0.0.0")
        if listen_ip == ip or (listen_ip.is_unspecified and ip.is_loopback):
            return True
    return False


def default_upstreams(listen: Iterable[Address], *, resolv_conf: Path = RESOLV_CONF,
                      fallback: Path = SYSTEMD_RESOLV_CONF) -> list[Address]:
    """The host's resolvers, minus ourselves (see the module docstring)."""
    listen = list(listen)
    for path in (resolv_conf, fallback):
        found = [(ip, 53) for ip in nameservers(path) if not is_self((ip, 53), listen)]
        if found:
            return found
    return []


class _UDPAnswer(asyncio.DatagramProtocol):
    """Waits for the one datagram that answers ``query_id`` on a connected socket."""

    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if (len(data) >= 2 and not self.answer.done()
                and struct.unpack_from("!H", data)[0] == self.query_id):
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: fail fast
        if not self.answer.done():
            self.answer.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc or ConnectionError("socket closed"))


class Forwarder:
    """Sends a query to the upstreams in turn and returns the first usable answer."""

    def __init__(self, upstreams: Sequence[Address], *, timeout: float = 2.0) -> None:
        self.upstreams = list(upstreams)
        self.timeout = timeout
        #: Queries sent to an upstream (UDP and TCP), for tests and metrics.
        self.sent = 0

    async def forward(self, packet: bytes) -> Any:
        """Answer the query ``packet`` (its ID is replaced); return the parsed DNSRecord
        with the ID the packet had. ``ForwardError`` when every upstream failed."""
        if len(packet) < 12:
            raise ForwardError("query too short")
        original_id = struct.unpack_from("!H", packet)[0]
        errors: list[str] = []
        for upstream in self.upstreams:
            try:
                response = await self._ask(upstream, packet)
            except (OSError, TimeoutError, DNSError, ForwardError) as err:
                errors.append(f"{upstream[0]}:{upstream[1]}: {err or type(err).__name__}")
                continue
            if response.header.rcode in (RCODE.SERVFAIL, RCODE.REFUSED):
                errors.append(f"{upstream[0]}:{upstream[1]}: {RCODE[response.header.rcode]}")
                continue
            response.header.id = original_id
            return response
        raise ForwardError("; ".join(errors) or "no upstream resolvers")

    async def _ask(self, upstream: Address, packet: bytes) -> Any:
        query_id = secrets.randbits(16)
        query = struct.pack("!H", query_id) + packet[2:]
        async with asyncio.timeout(self.timeout):
            raw = await self._udp(upstream, query, query_id)
            response = self._check(raw, query)
            if response.header.tc:
                raw = await self._tcp(upstream, query)
                response = self._check(raw, query)
        return response

    async def _udp(self, upstream: Address, query: bytes, query_id: int) -> bytes:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UDPAnswer(query_id), remote_addr=upstream)
        try:
            self.sent += 1
            transport.sendto(query)
            return await protocol.answer
        finally:
            transport.close()

    async def _tcp(self, upstream: Address, query: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            self.sent += 1
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(length)
        finally:
            writer.close()

    @staticmethod
    def _check(raw: bytes, query: bytes) -> Any:
        response = DNSRecord.parse(raw)
        asked = DNSRecord.parse(query)
        if response.header.id != asked.header.id or not response.header.qr:
            raise ForwardError("answer does not match the query")
        if [(q.qname, q.qtype) for q in response.questions] != [
                (q.qname, q.qtype) for q in asked.questions]:
            raise ForwardError("answer is for another question")
        return response

"""DNS over UDP and TCP on asyncio, around a :class:`Resolver`.

UDP answers from inside ``datagram_received`` whenever the resolver can answer without
the network (every cluster name), which keeps the hot path free of task creation; only
forwarded queries become tasks. TCP carries each message behind a two-byte length
(RFC 1035 4.2.2), several per connection, and closes idle connections. Garbage never
crashes anything: an unparseable datagram is dropped, an unparseable TCP message closes
its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from typing import Any, cast

from kubling.network.dns.resolver import TCP_LIMIT, Resolver, pack, udp_limit

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: Seconds a TCP connection may sit idle between queries (RFC 7766 suggests seconds).
TCP_IDLE_TIMEOUT = 10.0


def bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same address and port (port 0: a free one
    that is free for both)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            return udp, tcp
        except OSError as err:
            udp.close()
            tcp.close()
            if port != 0 or err.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is None:
            return
        try:
            reply, request = self.server.resolver.answer_packet_now(data, tcp=False)
        except Exception:
            log.exception("answering a query failed")
            return
        if reply is not None:
            self.transport.sendto(reply, addr)
        elif request is not None:
            self.server.spawn(self._respond_later(self.transport, request, data, addr))

    async def _respond_later(self, transport: asyncio.DatagramTransport, request: Any,
                             data: bytes, addr: Any) -> None:
        reply = await self.server.resolver.respond(request, data)
        if not transport.is_closing():
            transport.sendto(pack(reply, udp_limit(request)), addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # e.g. ICMP port unreachable from a gone client


class DNSServer:
    """Serves a resolver on given sockets (UDP datagram or TCP stream, already bound)."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._transports: list[asyncio.DatagramTransport] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, sock: socket.socket) -> None:
        """Start answering on ``sock`` (the server owns it from now on)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        if sock.type == socket.SOCK_DGRAM:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self), sock=sock)
            self._transports.append(transport)
        else:
            self._servers.append(await asyncio.start_server(self._serve_tcp, sock=sock))

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("answering a query failed", exc_info=task.exception())

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                out, request = self.resolver.answer_packet_now(data, tcp=True)
                if out is None:
                    if request is None:
                        break
                    out = pack(await self.resolver.respond(request, data), TCP_LIMIT)
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("serving a DNS connection failed")
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def addresses(self) -> list[Address]:
        """The UDP addresses served (with the real port when 0 was asked for)."""
        found: list[Address] = []
        for transport in self._transports:
            host, port = transport.get_extra_info("sockname")[:2]
            found.append((host, port))
        return found

    async def close(self) -> None:
        for transport in self._transports:
            transport.close()
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._transports.clear()
        self._servers.clear()

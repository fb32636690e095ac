"""An upgrade-aware byte pipe to a node agent: upstream's ``UpgradeAwareHandler`` for
``pods/exec``, ``pods/attach`` and ``pods/portforward``.

The client's upgrade request (WebSocket, or ``Upgrade: SPDY/3.1``) is replayed to the
agent with the headers the protocols need; the agent's answer decides. A ``101`` is passed
back with its protocol headers, and from then on the API server copies bytes both ways
without reading a frame, until either side closes — the agent alone speaks the stream
protocol. Anything else is relayed as the agent wrote it (status and plain-text body),
which kubectl shows as ``error: unable to upgrade connection: <body>``.

After the 101 the client's connection is taken from aiohttp (its transport gets a plain
stream protocol) and handed back closed, so aiohttp neither parses the stream as HTTP
nor keeps the connection alive afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable

from aiohttp import web

from kubling.apiserver import errors

#: Request headers the stream protocols need, passed to the agent as the client sent them.
FORWARDED = ("Connection", "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
             "Sec-WebSocket-Protocol", "X-Stream-Protocol-Version", "User-Agent")
#: Response headers of a 101 passed back to the client.
RETURNED = ("Upgrade", "Connection", "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol",
            "X-Stream-Protocol-Version")
CONNECT_TIMEOUT = 10.0
RESPONSE_TIMEOUT = 30.0
_MAX_HEAD = 64 * 1024
_MAX_ERROR_BODY = 50_000
_CHUNK = 256 * 1024


def is_upgrade(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower() and \
        bool(request.headers.get("Upgrade"))


async def proxy(request: web.Request, *, host: str, port: int, path: str,
                context: ssl.SSLContext | None,
                headers: list[tuple[str, str]] | None = None,
                dial_failed: Callable[[str, BaseException], errors.APIError] | None = None,
                ) -> web.StreamResponse:
    """Relay ``request`` to ``https://host:port{path}`` (``path`` with its query), or to
    ``http://`` without ``context``. ``headers`` replaces the stream protocols' set
    (``FORWARDED``) when the target is a user's server (``pods/proxy``: all the caller's
    end-to-end headers); ``dial_failed`` words a failed dial for that caller."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        upstream_reader, upstream_writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context,
                                    server_hostname=host if context is not None else None,
                                    limit=_MAX_HEAD), CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError) as err:
        if dial_failed is not None:
            raise dial_failed(netloc, err) from None
        raise errors.internal(f"error dialing backend: {_dial_error(netloc, err)}") from None
    try:
        upstream_writer.write(_request_head(request, netloc, path, headers))
        try:
            status, answer = await asyncio.wait_for(
                _read_head(upstream_reader), RESPONSE_TIMEOUT)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as err:
            raise errors.internal(f"error reading from backend {netloc}: "
                                  f"{err or type(err).__name__}") from None
        if status != 101:
            return await _relay_refusal(upstream_reader, status, answer)
        response = web.StreamResponse(status=101, reason="Switching Protocols")
        returned = RETURNED if headers is None else tuple(
            name for name in answer if name not in ("content-length", "transfer-encoding"))
        for name in returned:
            for value in answer.get(name.lower(), []):
                response.headers.add(name, value)
        if request.transport is not None:
            # Nothing the client sends after our 101 may reach aiohttp's HTTP parser:
            # reading resumes once the stream protocol has the transport (``_pipe``).
            request.transport.pause_reading()
        await response.prepare(request)
        await _pipe(request, upstream_reader, upstream_writer)
        response.force_close()
        return response
    finally:
        upstream_writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, ConnectionError):
            await upstream_writer.wait_closed()


def _request_head(request: web.Request, netloc: str, path: str,
                  headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"{request.method} {path} HTTP/1.1", f"Host: {netloc}"]
    if headers is not None:
        lines.extend(f"{name}: {value}" for name, value in headers)
    else:
        for name in FORWARDED:
            lines.extend(f"{name}: {value}" for value in request.headers.getall(name, []))
    if request.method in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, list[str]]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"malformed status line {status_line!r}")
    headers: dict[str, list[str]] = {}
    for line in lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(parts[1]), headers


async def _relay_refusal(reader: asyncio.StreamReader, status: int,
                         headers: dict[str, list[str]]) -> web.Response:
    length = int((headers.get("content-length") or ["0"])[0] or 0)
    body = b""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
        body = await asyncio.wait_for(
            reader.readexactly(min(length, _MAX_ERROR_BODY)), RESPONSE_TIMEOUT)
    content_type = (headers.get("content-type") or ["text/plain; charset=utf-8"])[0]
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


async def _pipe(request: web.Request, upstream_reader: asyncio.StreamReader,
                upstream_writer: asyncio.StreamWriter) -> None:
    """Copy both ways until one side ends, then end both."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    loop = asyncio.get_running_loop()
    client_reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    protocol = asyncio.StreamReaderProtocol(client_reader, loop=loop)
    aiohttp_protocol = transport.get_protocol()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if not transport.is_reading():
        transport.resume_reading()
    client_writer = asyncio.StreamWriter(transport, protocol, client_reader, loop)
    copies = [asyncio.create_task(_copy(client_reader, upstream_writer)),
              asyncio.create_task(_copy(upstream_reader, client_writer))]
    try:
        await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in copies:
            task.cancel()
        await asyncio.gather(*copies, return_exceptions=True)
        transport.set_protocol(aiohttp_protocol)
        transport.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()


def _dial_error(netloc: str, err: BaseException) -> str:
    """Go's wording for a failed dial (``dial tcp 10.0.0.1:10250: connect: connection
    refused``), which kubectl users recognise."""
    if isinstance(err, ssl.SSLError):
        return f"tls: {err.reason or err}"
    if isinstance(err, TimeoutError):
        return f"dial tcp {netloc}: i/o timeout"
    number = getattr(err, "errno", None)
    why = os.strerror(number).lower() if number else str(err)
    return f"dial tcp {netloc}: connect: {why}"

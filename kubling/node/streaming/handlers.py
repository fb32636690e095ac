"""Which wire a streaming request gets: the kubelet's choice between a WebSocket and the
SPDY/3.1 upgrade, and the subprotocol within each (``httpstream.Handshake``). The
kubelet server validates the request first; these answer the upgrade and run the
session to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from kubling.node.streaming import (
    StreamingError,
    portforward,
    remotecommand,
    spdychannel,
    upgrade,
    wschannel,
)

#: Bounds one WebSocket message (a client's stdin chunk or a tunnelled SPDY run).
MAX_MESSAGE = 16 * 1024 * 1024


async def remote_command(request: web.Request,
                         start: Callable[[], Awaitable[remotecommand.Process]],
                         options: remotecommand.Options) -> web.StreamResponse:
    """exec or attach over whichever upgrade the client asked for."""
    if wschannel.is_websocket(request.headers):
        if wschannel.offered(request.headers, wschannel.PROTOCOLS) is None:
            return _no_protocol(request.headers.getall("Sec-WebSocket-Protocol", []),
                                wschannel.PROTOCOLS)
        ws = web.WebSocketResponse(protocols=wschannel.PROTOCOLS, autoping=True,
                                   max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        await remotecommand.serve(start, wschannel.RemoteCommandWebSocket(ws), options)
        return ws
    refusal, protocol = _spdy_protocol(request, spdychannel.PROTOCOLS)
    if refusal is not None:
        return refusal
    async with upgrade.spdy_upgrade(
            request, {"X-Stream-Protocol-Version": protocol}) as (wire, response):
        conn = await spdychannel.accept(wire, options) if wire is not None else None
        if conn is not None:
            try:
                await remotecommand.serve(start, conn, options)
            finally:
                conn.running.cancel()
                await asyncio.gather(conn.running, return_exceptions=True)
    return response


async def port_forward(request: web.Request,
                       forwarder: portforward.PortForwarder) -> web.StreamResponse:
    """port-forward over the WebSocket tunnel, the WebSocket channels or raw SPDY."""
    if wschannel.is_websocket(request.headers):
        protocols = (portforward.WEBSOCKET_TUNNEL, portforward.WEBSOCKET_CHANNELS)
        chosen = wschannel.offered(request.headers, protocols)
        if chosen is None:
            return _no_protocol(request.headers.getall("Sec-WebSocket-Protocol", []),
                                protocols)
        ports: list[int] = []
        if chosen == portforward.WEBSOCKET_CHANNELS:
            try:
                ports = portforward.ports_of(
                    [*request.query.getall("port", []), *request.query.getall("ports", [])])
            except StreamingError as err:
                return web.Response(status=err.code, text=err.message)
        ws = web.WebSocketResponse(protocols=protocols, autoping=True,
                                   max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        if ws.ws_protocol == portforward.WEBSOCKET_TUNNEL:
            await forwarder.serve_spdy(upgrade.WebSocketWire(ws))
        else:
            await forwarder.serve_channels(ws, ports)
        return ws
    refusal, protocol = _spdy_protocol(request, (portforward.SPDY_PROTOCOL,))
    if refusal is not None:
        return refusal
    async with upgrade.spdy_upgrade(
            request, {"X-Stream-Protocol-Version": protocol}) as (wire, response):
        if wire is not None:
            await forwarder.serve_spdy(wire)
    return response


def _spdy_protocol(request: web.Request,
                   supported: tuple[str, ...]) -> tuple[web.Response | None, str]:
    """(a refusal, or None and the negotiated ``X-Stream-Protocol-Version``)."""
    if not upgrade.is_spdy(request.headers):
        return web.Response(status=400, text="Upgrade request required"), ""
    offered = request.headers.getall("X-Stream-Protocol-Version", [])
    protocol = upgrade.negotiate(offered, supported)
    if protocol is None:
        return _no_protocol(offered, supported), ""
    return None, protocol


def _no_protocol(offered: list[str], supported: tuple[str, ...]) -> web.Response:
    """``httpstream.Handshake``'s refusal."""
    return web.Response(status=403, text=(
        f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
        f"server supports {list(supported)}"))

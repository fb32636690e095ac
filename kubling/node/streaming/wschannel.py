"""The WebSocket channel protocols of exec and attach (``v5.channel.k8s.io``,
``v4.channel.k8s.io``): every binary message starts with its channel byte — 0 stdin,
1 stdout, 2 stderr, 3 error (the final ``Status`` as JSON), 4 resize
(``{"Width":..,"Height":..}``) — and ``v5`` adds 255, "close": ``[255, 0]`` is the end of
the client's stdin. ``v4.base64.channel.k8s.io`` (for clients that can only send text,
such as browsers) carries the same in text messages: the channel as an ASCII digit, then
the data in base64. aiohttp answers pings and the closing handshake.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Mapping

import orjson
from aiohttp import WSMsgType, web

from kubling.api.meta import Object
from kubling.node.streaming import remotecommand

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
#: In the order the server prefers them; the client's order decides among these.
PROTOCOLS = (V5, V4, V4_BASE64)
CLOSE = 255


def is_websocket(headers: Mapping[str, str]) -> bool:
    return headers.get("Upgrade", "").lower() == "websocket"


def offered(headers: Mapping[str, str], supported: tuple[str, ...]) -> str | None:
    """The first of the client's subprotocols that is supported, or None."""
    for value in headers.get("Sec-WebSocket-Protocol", "").split(","):
        if value.strip() in supported:
            return value.strip()
    return None


class RemoteCommandWebSocket:
    """A ``remotecommand.Connection`` over a prepared WebSocket."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.base64 = ws.ws_protocol == V4_BASE64

    async def send(self, stream: int, data: bytes) -> None:
        if self.ws.closed:
            raise ConnectionResetError("the client closed the stream")
        if self.base64:
            await self.ws.send_str(str(stream) + base64.b64encode(data).decode())
        else:
            await self.ws.send_bytes(bytes((stream,)) + data)

    async def events(self) -> AsyncIterator[remotecommand.Event]:
        async for message in self.ws:
            decoded = self._decode(message.type, message.data)
            if decoded is None:
                continue
            channel, payload = decoded
            if channel == remotecommand.STDIN:
                if payload:
                    yield remotecommand.Event("stdin", payload)
            elif channel == remotecommand.RESIZE:
                for width, height in remotecommand.parse_sizes(payload):
                    yield remotecommand.Event("resize", width=width, height=height)
            elif channel == CLOSE and payload[:1] == bytes((remotecommand.STDIN,)):
                yield remotecommand.Event("stdin-eof")

    def _decode(self, kind: WSMsgType, data: object) -> tuple[int, bytes] | None:
        """(channel, payload) of a message of this protocol; None for anything else."""
        if not self.base64 and kind == WSMsgType.BINARY and isinstance(data, bytes) and data:
            return data[0], data[1:]
        if self.base64 and kind == WSMsgType.TEXT and isinstance(data, str) and \
                data[:1].isdigit():
            try:
                return int(data[0]), base64.b64decode(data[1:], validate=True)
            except binascii.Error:
                return None  # not base64: dropped, as a malformed frame
        return None

    async def finish(self, status: Object) -> None:
        if not self.ws.closed:
            await self.send(remotecommand.ERROR, orjson.dumps(status))
            await self.ws.close()

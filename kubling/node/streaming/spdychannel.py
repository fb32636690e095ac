"""exec and attach over SPDY (``X-Stream-Protocol-Version: v4.channel.k8s.io``): the
client opens one stream per channel, named by its ``streamType`` header — ``error``,
``stdin``, ``stdout``, ``stderr``, ``resize`` — and the session starts once every stream
the query asked for is there (the kubelet waits ``STREAM_CREATION_TIMEOUT`` for them).
The end of stdin is the stdin stream's FIN; resize is a run of JSON sizes; the status
goes on the error stream, and then every stream is finished and the session closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson

from kubling.api.meta import Object
from kubling.node.streaming import remotecommand, spdy

PROTOCOLS = ("v4.channel.k8s.io",)
STREAM_CREATION_TIMEOUT = 30.0


def expected_streams(options: remotecommand.Options) -> set[str]:
    wanted = {"error"}
    for name, on in (("stdin", options.stdin), ("stdout", options.stdout),
                     ("stderr", options.stderr), ("resize", options.tty)):
        if on:
            wanted.add(name)
    return wanted


class RemoteCommandSpdy:
    """A ``remotecommand.Connection`` over the streams of one SPDY session."""

    def __init__(self, session: spdy.Session, streams: dict[str, spdy.Stream],
                 running: asyncio.Task[None]) -> None:
        self.session = session
        self.streams = streams
        self.running = running

    async def send(self, stream: int, data: bytes) -> None:
        name = "stdout" if stream == remotecommand.STDOUT else "stderr"
        target = self.streams.get(name)
        if target is not None:
            await target.write(data)

    async def events(self) -> AsyncIterator[remotecommand.Event]:
        queue: asyncio.Queue[remotecommand.Event | None] = asyncio.Queue()
        readers = [asyncio.create_task(self._stdin(queue))] if "stdin" in self.streams else []
        if "resize" in self.streams:
            readers.append(asyncio.create_task(self._resize(queue)))
        self.running.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _stdin(self, queue: asyncio.Queue[remotecommand.Event | None]) -> None:
        stream = self.streams["stdin"]
        while data := await stream.read():
            await queue.put(remotecommand.Event("stdin", data))
        await queue.put(remotecommand.Event("stdin-eof"))

    async def _resize(self, queue: asyncio.Queue[remotecommand.Event | None]) -> None:
        stream, pending = self.streams["resize"], b""
        while data := await stream.read():
            pending += data
            end = pending.rfind(b"}")
            if end < 0:
                continue
            for width, height in remotecommand.parse_sizes(pending[:end + 1]):
                await queue.put(remotecommand.Event("resize", width=width, height=height))
            pending = pending[end + 1:]

    async def finish(self, status: Object) -> None:
        with contextlib.suppress(ConnectionError):
            await self.streams["error"].write(orjson.dumps(status))
        for stream in self.streams.values():
            await stream.close()
        await self.session.close()


async def accept(wire: spdy.Wire,
                 options: remotecommand.Options) -> RemoteCommandSpdy | None:
    """Wait for the client's streams; None (and the session closed) when they do not all
    come in time or the client leaves first."""
    wanted = expected_streams(options)
    streams: dict[str, spdy.Stream] = {}
    complete = asyncio.Event()

    def on_stream(stream: spdy.Stream) -> bool:
        kind = stream.headers.get("streamtype", "")
        if kind not in wanted or kind in streams:
            return False
        streams[kind] = stream
        if len(streams) == len(wanted):
            complete.set()
        return True

    session = spdy.Session(wire, on_stream)
    running = asyncio.create_task(session.run())
    waiter = asyncio.create_task(complete.wait())
    await asyncio.wait({running, waiter}, timeout=STREAM_CREATION_TIMEOUT,
                       return_when=asyncio.FIRST_COMPLETED)
    if not complete.is_set():
        waiter.cancel()
        await session.close()
        running.cancel()
        await asyncio.gather(running, waiter, return_exceptions=True)
        return None
    return RemoteCommandSpdy(session, streams, running)

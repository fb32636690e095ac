"""Attaching to a running container's own stdio through its conmon (``kubectl attach``).

conmon keeps a ``SOCK_SEQPACKET`` socket named ``attach`` in the bundle: every packet it
sends is one byte naming the pipe (2 stdout, 3 stderr) and the bytes the container wrote
after the client connected; what the client sends goes to the container's stdin (when it
was created with one). A terminal is resized through the ``ctl`` fifo (``1 <rows> <cols>``),
one line per read: conmon 2.1 acts on the first line of each read only, and kubectl sends
two sizes at once when it attaches (one larger, then the real one, to force a redraw), so
the sizes are written one at a time, a moment apart. conmon closes the socket when the
container exits, which ends the session.

The socket's path may exceed ``sun_path``'s 108 bytes under a deep data dir, so it is
reached through ``/proc/self/fd`` of the bundle directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

_STDOUT, _STDERR = 2, 3
_PACKET = 8192 + 1
#: How long conmon gets to read one resize line before the next is written.
_RESIZE_PACE = 0.05


class AttachSession:
    """The same surface as ``execsession.ExecSession``: output until the container exits,
    input to its stdin; ``wait`` returns 0 once conmon has closed the socket."""

    def __init__(self, sock: socket.socket, bundle: Path, *, tty: bool) -> None:
        self._sock = sock
        self._bundle = bundle
        self.tty = tty
        self._outputs: dict[int, asyncio.Queue[bytes]] = {
            _STDOUT: asyncio.Queue(64), _STDERR: asyncio.Queue(64)}
        self._reader = asyncio.create_task(self._demultiplex())
        self._sizes: asyncio.Queue[tuple[int, int]] = asyncio.Queue(16)
        self._resizer: asyncio.Task[None] | None = None

    async def _demultiplex(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while packet := await loop.sock_recv(self._sock, _PACKET):
                queue = self._outputs.get(packet[0])
                if queue is not None and len(packet) > 1:
                    await queue.put(packet[1:])
        except OSError:
            pass
        finally:
            for queue in self._outputs.values():
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(b"")

    async def read_stdout(self) -> bytes:
        return await self._read(_STDOUT)

    async def read_stderr(self) -> bytes:
        return await self._read(_STDERR)

    async def _read(self, pipe: int) -> bytes:
        if self._reader.done() and self._outputs[pipe].empty():
            return b""
        return await self._outputs[pipe].get()

    async def write_stdin(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().sock_sendall(self._sock, data)

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def resize(self, width: int, height: int) -> None:
        if not self.tty or width <= 0 or height <= 0:
            return
        if self._sizes.full():  # a flood of sizes: the latest matter, drop the oldest
            self._sizes.get_nowait()
        self._sizes.put_nowait((width, height))
        if self._resizer is None:
            self._resizer = asyncio.create_task(self._write_sizes())

    async def _write_sizes(self) -> None:
        while True:
            width, height = await self._sizes.get()
            with contextlib.suppress(OSError):
                fd = os.open(self._bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK)
                try:
                    os.write(fd, f"1 {height} {width}\n".encode())
                finally:
                    os.close(fd)
            await asyncio.sleep(_RESIZE_PACE)

    async def wait(self) -> int:
        await asyncio.shield(self._reader)
        return 0

    async def close(self) -> None:
        tasks = [self._reader, *([self._resizer] if self._resizer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sock.close()


async def attach(bundle: Path, *, tty: bool) -> AttachSession:
    """Connect to the attach socket in ``bundle``; OSError when there is none."""
    directory = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{directory}/attach")
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(directory)
    return AttachSession(sock, bundle, tty=tty)

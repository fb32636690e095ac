"""Connecting to a port on a pod's own loopback, as upstream runtimes do for port-forward:
the socket is made inside the pod's network namespace, so ``127.0.0.1`` is the pod's,
and a server bound only to localhost in the pod is reachable.

A socket belongs to the namespace it was created in, whatever thread uses it later; so a
short-lived thread joins the namespace (``setns``), creates the sockets and ends — no
thread of kubling is ever left in a pod's namespace — and the event loop connects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from pathlib import Path

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


class DialError(OSError):
    """No connection; the message is worded as the CRI runtimes word it."""


async def dial(netns: Path | None, port: int) -> tuple[asyncio.StreamReader,
                                                       asyncio.StreamWriter]:
    """A connection to ``localhost:port`` in ``netns`` (the node's own when None):
    IPv4 first, then IPv6, as containerd tries them."""
    v4, v6 = await asyncio.to_thread(_sockets_in, netns)
    loop = asyncio.get_running_loop()
    failures: list[str] = []
    for sock, address, label in (
            (v4, ("127.0.0.1", port), f"IPv4: dial tcp4 127.0.0.1:{port}"),
            (v6, ("::1", port), f"IPv6 dial tcp6 [::1]:{port}")):
        if sock is None:
            continue
        try:
            await loop.sock_connect(sock, address)
        except OSError as err:
            sock.close()
            why = os.strerror(err.errno).lower() if err.errno else str(err)
            failures.append(f"{label}: connect: {why}")
            continue
        for other in (v4, v6):
            if other is not None and other is not sock:
                other.close()
        return await asyncio.open_connection(sock=sock)
    where = f' inside namespace "{netns}"' if netns is not None else ""
    raise DialError(f"failed to connect to localhost:{port}{where}, {' '.join(failures)}")


def _sockets_in(netns: Path | None) -> tuple[socket.socket | None, socket.socket | None]:
    made: list[socket.socket | None] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            if netns is not None:
                fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        number = ctypes.get_errno()
                        raise DialError(number, f"setns {netns}: {os.strerror(number)}")
                finally:
                    os.close(fd)
            for family in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError:
                    made.append(None)  # no IPv6 in this namespace
                    continue
                sock.setblocking(False)
                made.append(sock)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=work, name="kubling-nsdial", daemon=True)
    thread.start()
    thread.join()
    if failure:
        for sock in made:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        raise failure[0]
    return made[0], made[1]

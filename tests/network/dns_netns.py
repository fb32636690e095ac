"""A throw-away network namespace where port 53 is free, for the stock resolvers.

glibc's resolver always asks port 53 of the ``nameserver`` in /etc/resolv.conf, so the
test serves the cluster DNS inside its own namespace (``kubling-dnstest-<hex>``, lo up):
sockets are bound there by a short-lived thread that enters the namespace (``setns`` moves
only that thread), and the process's asyncio loop serves them from the host side. The
namespace's resolv.conf lives in ``/etc/netns/<name>/``, which ``ip netns exec`` bind-mounts
over /etc/resolv.conf for the command it runs, so the host's file is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from kubling.network import netns
from kubling.network.dns.transport import bind_pair

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

ETC_NETNS = Path("/etc/netns")


def bind_in_netns(ns_path: Path, host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to ``host:port`` inside the namespace at ``ns_path``."""
    result: list[tuple[socket.socket, socket.socket]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(ns_path, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            result.append(bind_pair(host, port))
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=work)  # exits right after: no thread stays inside
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


@contextlib.contextmanager
def dns_netns(search: str = "default.svc.cluster.local svc.cluster.local cluster.local"
              ) -> Iterator[str]:
    """A fresh namespace whose resolv.conf points at 127.0.0.1 with ``search``/ndots:5."""
    name = f"kubling-dnstest-{secrets.token_hex(4)}"
    created_etc_netns = not ETC_NETNS.exists()
    config_dir = ETC_NETNS / name
    netns.create(name)
    try:
        config_dir.mkdir(parents=True)
        (config_dir / "resolv.conf").write_text(
            f"nameserver 127.0.0.1\nsearch {search}\noptions ndots:5 timeout:2 attempts:2\n")
        yield name
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
        if created_etc_netns:
            with contextlib.suppress(OSError):
                ETC_NETNS.rmdir()
        netns.delete(name)


def run_in(name: str, *cmd: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in namespace ``name`` with its resolv.conf (blocking: call in a thread)."""
    return subprocess.run(["ip", "netns", "exec", name, *cmd], capture_output=True, text=True,
                          timeout=timeout, check=False)

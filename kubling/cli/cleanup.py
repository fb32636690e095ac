"""``kubling server --cleanup``: remove what kubling made on this host, and nothing else.

Like k3s's ``k3s-killall.sh``, for a host that should forget a cluster (or recover from a
crash): the pods' containers stop, and the host state the node agent and the proxy made goes.
The data dir (database, certificates, images, pod files) stays, so the next
``kubling server`` comes back with the same cluster and starts its pods again.

In order, each step independent of the others' failures:

1. runc containers under ``<data-dir>/runtime`` (killed, their conmon monitors reaped, their
   cgroups and bundles removed, as the agent's runtime deletes them);
2. mounts below ``<data-dir>`` (container root filesystems, volumes), newest first;
3. what ``kubling.network.hostcleanup`` removes: the ``ip kubling`` nftables table,
   ``kubling-`` network namespaces, the ``kubling0`` bridge, the CNI ``nat`` chains of the
   ``kubling`` network;
   then the pods' pinned IPC and UTS namespaces (``/run/kubling/ns``);
4. the ``/kubling`` cgroup tree, and the CNI leases and result cache under
   ``<data-dir>/cni`` (they name addresses of namespaces that no longer exist).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from kubling.network import hostcleanup
from kubling.node import sandbox
from kubling.node.runtime import ContainerRuntimeError, Runtime, cgroups

__all__ = ["cleanup_host", "containers", "mounts_below", "unmount_below"]

log = logging.getLogger(__name__)

_MNT_DETACH = 2
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def containers(data_dir: Path) -> list[str]:
    """Delete every container of the agent's runtime root in ``data_dir``."""
    runtime = Runtime(data_dir / "runtime")

    async def run() -> list[str]:
        removed, failed = [], []
        for state in await runtime.list():
            try:
                await runtime.delete(state.id)
                removed.append(state.id)
            except ContainerRuntimeError as err:
                failed.append(f"{state.id} ({err})")
        if failed:
            raise RuntimeError("cannot delete " + ", ".join(failed))
        return removed

    if shutil.which("runc") is None or not (data_dir / "runtime").is_dir():
        return []
    return asyncio.run(run())


def mounts_below(base: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points at or below ``base``, in mount order (field 5 of mountinfo, with its
    octal escapes for space, tab, newline and backslash undone)."""
    root = os.path.realpath(base).rstrip("/")
    points = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split(" ", 5)
        if len(fields) < 5:
            continue
        point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return points


def unmount_below(base: Path) -> list[str]:
    """Detach every mount below ``base``, newest first (stacked and nested mounts)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    removed = []
    for point in reversed(mounts_below(base)):
        if libc.umount2(os.fsencode(point), _MNT_DETACH) == 0:
            removed.append(point)
        else:
            log.warning("cannot unmount %s: %s", point, os.strerror(ctypes.get_errno()))
    return removed


def _cgroups() -> list[str]:
    left = cgroups.remove_cgroup("/kubling")
    if left:
        raise RuntimeError("still in use: " + ", ".join(map(str, left)))
    return ["/kubling"]


def _cni_state(data_dir: Path) -> list[str]:
    removed = []
    for sub in ("networks", "cache"):
        path = data_dir / "cni" / sub
        if path.exists():
            shutil.rmtree(path)
            removed.append(str(path))
    return removed


def cleanup_host(data_dir: Path) -> int:
    """Run every step, print one line per step; 0 when all succeeded, else 1."""
    data_dir = data_dir.absolute()
    steps: list[tuple[str, Callable[[], list[str]]]] = [
        ("containers", lambda: containers(data_dir)),
        ("mounts", lambda: unmount_below(data_dir)),
        *hostcleanup.steps(),
        ("pod namespaces", sandbox.remove_all_namespaces),
        ("cgroups", _cgroups),
        ("CNI leases", lambda: _cni_state(data_dir)),
    ]
    failed = 0
    for name, step in steps:
        try:
            removed = step()
        except Exception as err:  # report and go on: the other steps still help
            failed += 1
            print(f"kubling: cleanup: {name}: failed: {err}", file=sys.stderr)
            continue
        what = ", ".join(removed) if len(removed) <= 5 else f"{len(removed)} removed"
        print(f"kubling: cleanup: {name}: {what or 'none'}", file=sys.stderr)
    return 1 if failed else 0

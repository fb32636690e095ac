"""hostPath volumes: a file or directory of the node, bind-mounted as it is.

``type`` checks follow upstream, with its messages: ``DirectoryOrCreate`` and
``FileOrCreate`` make what is missing (0755 directory, 0644 empty file), ``Directory``,
``File``, ``Socket``, ``CharDevice`` and ``BlockDevice`` require it, and ``""`` checks
nothing (a missing path is made a directory, as container runtimes do). Nothing is removed
on tear-down: the data belongs to the node.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from kubling.api.meta import Object
from kubling.node.volumes import plugin

_CHECKS = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "File": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a socket file"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}


def check_type(path: str, kind: str) -> None:
    """Upstream's hostPath type check (creating what ``...OrCreate`` asks for); raises
    VolumeError."""
    try:
        if kind in ("", "DirectoryOrCreate") and not os.path.lexists(path):
            os.makedirs(path, mode=0o755, exist_ok=True)
        elif kind == "FileOrCreate" and not os.path.lexists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError as err:
        raise plugin.VolumeError(str(err)) from err
    if kind == "":
        return
    wanted = {"DirectoryOrCreate": "Directory", "FileOrCreate": "File"}.get(kind, kind)
    if wanted not in _CHECKS:
        raise plugin.VolumeError(f"{kind} is an invalid volume type")
    test, what = _CHECKS[wanted]
    try:
        ok = test(os.stat(path).st_mode)
    except OSError:
        ok = False
    if not ok:
        raise plugin.VolumeError(f"hostPath type check failed: {path} is not {what}")


class HostPathVolume:
    read_only = False

    def __init__(self, volume: Object, pod_dir: Path, host: plugin.Host) -> None:
        self.name: str = volume["name"]
        source = volume.get("hostPath") or {}
        self.path = str(source.get("path") or "")
        self.type = str(source.get("type") or "")

    @property
    def host_path(self) -> Path:
        return Path(self.path)

    async def set_up(self, pod: Object) -> None:
        await asyncio.to_thread(check_type, self.path, self.type)

    async def tear_down(self) -> None:
        return None

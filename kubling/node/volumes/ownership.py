"""The kubelet's ``SetVolumeOwnership``: a volume made usable by the pod's ``fsGroup``.

For the volume kinds that manage ownership (here: PersistentVolumes of type ``local``; the
kubelet leaves ``hostPath`` alone), every file and directory below the mount point is given
the fsGroup as its group and group read/write permission — directories also group execute
and setgid, so files created later inherit the group. Symlinks get the group but no mode
change (a symlink's mode means nothing). With ``fsGroupChangePolicy: OnRootMismatch`` the
walk is skipped when the volume's root already has that group and those permissions, which
is what makes large volumes start fast.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["set_volume_ownership"]

_RW = 0o660
_RO = 0o440
_EXEC = 0o110


def set_volume_ownership(root: Path, group: int, *, read_only: bool = False,
                         policy: str = "Always") -> None:
    """Give ``root`` and what is below it to ``group``; call from a thread (it walks)."""
    if policy == "OnRootMismatch" and _root_matches(root, group, read_only):
        return
    _change(root, group, read_only)
    for directory, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            _change(Path(directory) / name, group, read_only)


def _root_matches(root: Path, group: int, read_only: bool) -> bool:
    info = os.stat(root)
    wanted = (_RO if read_only else _RW) | _EXEC | stat.S_ISGID
    return info.st_gid == group and info.st_mode & wanted == wanted


def _change(path: Path, group: int, read_only: bool) -> None:
    info = os.lstat(path)
    os.lchown(path, -1, group)
    if stat.S_ISLNK(info.st_mode):
        return
    mask = _RO if read_only else _RW
    if stat.S_ISDIR(info.st_mode):
        mask |= stat.S_ISGID | _EXEC
    os.chmod(path, stat.S_IMODE(info.st_mode) | mask)

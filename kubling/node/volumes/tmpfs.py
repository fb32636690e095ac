"""Memory-backed volume directories: a tmpfs mounted on the host below the pod directory.

An emptyDir with ``medium: Memory`` must be one filesystem shared by every container of the
pod, and secrets must never touch the disk, so the tmpfs is mounted once on the host and
bind-mounted into the containers like any other volume directory. The mount's source is
``kubling-tmpfs`` (the source field of /proc/self/mountinfo), so a cleanup can tell it is
kubling's; ``kubling.node.images.rootfs.unmount_rootfs`` removes it with its directory.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path

from kubling.node.images import rootfs

MOUNT_SOURCE = "kubling-tmpfs"

_MS_NOSUID = 0x2
_MS_NODEV = 0x4


def mount(directory: Path, *, size: int | None = None, mode: int = 0o777) -> None:
    """Mount a tmpfs at ``directory`` (made if missing) unless one is there already;
    ``size`` in bytes (the kernel's default, half the memory, when None). Raises OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    if rootfs.is_mounted(directory):
        return
    options = f"mode={mode:o}" + (f",size={size}" if size is not None else "")
    if _mount_call()(MOUNT_SOURCE.encode(), os.fsencode(directory), b"tmpfs",
                     _MS_NOSUID | _MS_NODEV, options.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount a tmpfs at {directory}: {os.strerror(err)}")


def unmount(directory: Path) -> None:
    """Unmount whatever is below ``directory`` and remove it (nothing when it is gone)."""
    rootfs.unmount_rootfs(directory)


@functools.cache
def _mount_call() -> Callable[..., int]:
    function = ctypes.CDLL(None, use_errno=True).mount
    function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                         ctypes.c_char_p]
    function.restype = ctypes.c_int
    call: Callable[..., int] = function
    return call

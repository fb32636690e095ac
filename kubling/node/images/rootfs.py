"""A container's root filesystem: an overlay mount over unpacked image layers.

    <container_dir>/rootfs   the overlay mount point
    <container_dir>/upper    the container's own writes (absent for read-only mounts)
    <container_dir>/work     overlayfs's scratch directory, on the same filesystem as upper
    <container_dir>/empty-N  empty lower dirs, for images with too few layers (below)

The mount is made with the mount(2) system call through ctypes: spawning /bin/mount would
cost more than the whole budget of a container start. Mounts are named `kubling-overlay` (the
source field of /proc/self/mountinfo) so that a cleanup can recognise them.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import resource
import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RootfsError", "is_mounted", "mount_rootfs", "unmount_rootfs"]

MOUNT_SOURCE = "kubling-overlay"

_MS_RDONLY = 1
_MNT_DETACH = 2
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


class RootfsError(Exception):
    """A root filesystem that could not be mounted or unmounted; the message says why."""


def mount_rootfs(layers: Sequence[Path], container_dir: Path, *, readonly: bool = False) -> Path:
    """Mount an overlay of `layers` (given lowest first) at `container_dir`/rootfs and return
    that path. Writes go to `container_dir`/upper (with `container_dir`/work, overlayfs's
    scratch dir); with `readonly` the mount is read-only and has no upper dir. Already
    mounted: the existing mount is returned.

    overlayfs wants at least one lower dir, and two when there is no upper dir; empty
    directories make up the difference (the same one twice is refused as conflicting).
    """
    container_dir = Path(os.path.abspath(container_dir))
    rootfs = container_dir / "rootfs"
    if is_mounted(rootfs):
        return rootfs
    lowers = [_checked_layer(layer) for layer in layers]
    padding = [container_dir / f"empty-{i}" for i in range((2 if readonly else 1) - len(lowers))]
    lowers = [str(path) for path in padding] + lowers
    # overlayfs stacks lowerdir from the right: the topmost layer comes first.
    options = ["lowerdir=" + ":".join(_escape(path) for path in reversed(lowers))]
    if not readonly:
        options.append(f"upperdir={_escape(str(container_dir / 'upper'))}")
        options.append(f"workdir={_escape(str(container_dir / 'work'))}")
    data = ",".join(options).encode()
    _check_options_fit(data, len(lowers))

    dirs = [rootfs, *padding]
    if not readonly:
        dirs += [container_dir / "upper", container_dir / "work"]
    try:
        for directory in dirs:
            directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RootfsError(f"cannot prepare {container_dir}: {exc}") from exc

    flags = _MS_RDONLY if readonly else 0
    if _libc().mount(MOUNT_SOURCE.encode(), os.fsencode(rootfs), b"overlay", flags, data) != 0:
        err = ctypes.get_errno()
        raise RootfsError(
            f"cannot mount the overlay at {rootfs} ({len(lowers)} layers): "
            f"{os.strerror(err)} (the kernel log may say more)"
        )
    return rootfs


def unmount_rootfs(container_dir: Path) -> None:
    """Unmount `container_dir`/rootfs — and anything else mounted below `container_dir` —
    then remove `container_dir` with the upper and work dirs. A busy mount is detached
    lazily (MNT_DETACH): it disappears from the tree now and is freed when its last user
    goes. Nothing to do when `container_dir` is already gone."""
    base = os.path.realpath(container_dir)
    if base == "/":
        raise RootfsError("refusing to unmount and remove everything below /")
    for point in reversed(_mounts_below(base)):  # newest first: stacked and nested mounts
        _unmount(point)
    left = _mounts_below(base)
    if left:
        raise RootfsError(f"cannot remove {container_dir}: still mounted at {', '.join(left)}")
    try:
        shutil.rmtree(base)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RootfsError(f"cannot remove {container_dir}: {exc}") from exc


def is_mounted(path: Path) -> bool:
    """Whether something is mounted at `path` (after resolving symlinks), per
    /proc/self/mountinfo."""
    return os.path.realpath(path) in _mount_points()


def _checked_layer(layer: Path) -> str:
    """The layer's absolute path; the kernel's ENOENT would not say which layer is missing."""
    path = os.path.abspath(layer)
    if not os.path.isdir(path):
        raise RootfsError(f"layer directory {path} does not exist")
    return path


def _escape(path: str) -> str:
    """Escape what overlayfs's option parser treats specially: ',' separates options and
    ':' separates lower dirs; a backslash escapes either."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _check_options_fit(data: bytes, layer_count: int) -> None:
    """mount(2) copies at most one page of options; longer ones would be cut short."""
    limit = resource.getpagesize()
    if len(data) + 1 > limit:  # + the terminating NUL
        raise RootfsError(
            f"too many layers to mount: the overlay options for {layer_count} layers take "
            f"{len(data) + 1} bytes, and mount(2) accepts at most {limit} (the page size); "
            "shorten the layer paths or flatten the image"
        )


def _unmount(point: str) -> None:
    libc = _libc()
    target = os.fsencode(point)
    if libc.umount2(target, 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EBUSY:  # open files or a process inside: detach now, free later
        if libc.umount2(target, _MNT_DETACH) == 0:
            return
        err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # unmounted meanwhile
        return
    raise RootfsError(f"cannot unmount {point}: {os.strerror(err)}")


def _mounts_below(base: str) -> list[str]:
    """Mount points at `base` or below it, in mount order."""
    below = base.rstrip("/") + "/"
    return [point for point in _mount_points() if point == base or point.startswith(below)]


def _mount_points() -> list[str]:
    """Mount points of this process's mount namespace, in mount order. Field 5 of a
    mountinfo line is the mount point, with space, tab, newline and backslash written as
    octal escapes (\\040 ...)."""
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        lines = mountinfo.read().splitlines()
    points = []
    for line in lines:
        fields = line.split(b" ", 5)
        if len(fields) < 5:
            continue
        point = fields[4]
        if b"\\" in point:
            point = _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), point)
        points.append(os.fsdecode(point))
    return points


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library's mount(2) and umount2(2), with errno kept for ctypes.get_errno()."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    return libc

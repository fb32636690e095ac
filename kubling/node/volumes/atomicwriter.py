"""Upstream's atomic writer: a set of files projected into a volume directory so that a
reader sees either the whole old set or the whole new one, never a mix.

The layout, as the kubelet makes it (configMap, secret, downwardAPI and projected volumes):

    <dir>/..2026_11_26_23_10_00.123456789/   the real files of one version
    <dir>/..data -> ..2026_11_26_23_10_00.123456789
    <dir>/<key>  -> ..data/<key>              one symlink per top-level path

An update writes a new timestamped directory, points ``..data_tmp`` at it and renames that
over ``..data`` (rename(2) is atomic), then removes the old directory. A container that
mounted the whole volume follows ``..data`` and sees the new version; one that mounted a
single key with ``subPath`` holds the old file's inode and never sees an update — the
behaviour users know from upstream. Names starting with ``..`` are reserved.

``write`` is synchronous and not thread-safe for one directory: a pod worker owns its
volumes and calls it from one thread at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DATA_DIR = "..data"
_NEW_DATA_DIR = "..data_tmp"
_MAX_FILE_NAME = 255
_MAX_PATH = 4096


class PayloadError(ValueError):
    """A projected path the writer refuses (absolute, with ``..``, too long)."""


@dataclasses.dataclass(frozen=True)
class FileProjection:
    """One file of a payload: its bytes, its permission bits and, optionally, its owner
    and group (the pod's ``fsGroup``)."""

    data: bytes
    mode: int
    fs_user: int | None = None
    fs_group: int | None = None


Payload = Mapping[str, FileProjection]


def validate_path(path: str) -> None:
    """Upstream's rules for a projected path: relative, no ``..`` element, not starting
    with ``..`` (reserved for the writer), names up to 255 and paths up to 4096 chars."""
    if not path:
        raise PayloadError(f'invalid path: must not be empty: "{path}"')
    if path.startswith("/"):
        raise PayloadError(f"invalid path: must be relative path: {path}")
    if len(path) > _MAX_PATH:
        raise PayloadError(f"invalid path: must be less than or equal to {_MAX_PATH} characters")
    items = path.split("/")
    for item in items:
        if item == "..":
            raise PayloadError(f"invalid path: must not contain '..': {path}")
        if len(item) > _MAX_FILE_NAME:
            raise PayloadError("invalid path: filenames must be less than or equal to "
                               f"{_MAX_FILE_NAME} characters")
    if items[0].startswith("..") and len(items[0]) > 2:
        raise PayloadError(f"invalid path: must not start with '..': {path}")


def _clean(payload: Payload) -> dict[str, FileProjection]:
    out: dict[str, FileProjection] = {}
    for path, projection in payload.items():
        validate_path(path)
        out[os.path.normpath(path)] = projection
    return out


def write(target: Path, payload: Payload) -> bool:
    """Project ``payload`` into ``target`` (which must exist) atomically; False when the
    files on disk already hold exactly this payload and nothing was written."""
    clean = _clean(payload)
    data_link = target / DATA_DIR
    try:
        old = os.readlink(data_link)
    except FileNotFoundError:
        old = ""
    old_dir = target / old if old else None
    stale: set[str] = set()
    if old_dir is not None:
        stale = _existing_paths(old_dir) - _wanted_paths(clean)
        if not stale and not _differs(clean, old_dir):
            return False
    new_dir = Path(tempfile.mkdtemp(
        prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=target))
    try:
        os.chmod(new_dir, 0o755)  # group and others must traverse it, whatever the umask
        _own_dirs(new_dir, clean)
        _write_files(new_dir, clean)
        _create_visible_links(target, clean)
        tmp_link = target / _NEW_DATA_DIR
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        os.symlink(new_dir.name, tmp_link)
        os.rename(tmp_link, data_link)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    for path in stale:
        if "/" not in path:  # only the top-level symlinks live outside ..data
            with contextlib.suppress(FileNotFoundError):
                (target / path).unlink()
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
    return True


def _wanted_paths(payload: Mapping[str, FileProjection]) -> set[str]:
    """Every path of the payload and each of its parent directories."""
    wanted: set[str] = set()
    for path in payload:
        while path:
            wanted.add(path)
            path = os.path.dirname(path)
    return wanted


def _existing_paths(directory: Path) -> set[str]:
    found: set[str] = set()
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            found.add(os.path.relpath(os.path.join(root, name), directory))
    return found


def _differs(payload: Mapping[str, FileProjection], directory: Path) -> bool:
    """Whether any file's bytes or mode differ from what is on disk."""
    for path, projection in payload.items():
        full = directory / path
        try:
            if (full.stat().st_mode & 0o7777) != projection.mode:
                return True
            if full.read_bytes() != projection.data:
                return True
        except OSError:
            return True
    return False


def _write_files(directory: Path, payload: Mapping[str, FileProjection]) -> None:
    for path, projection in payload.items():
        full = directory / path
        full.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, projection.data)
            if projection.fs_user is not None or projection.fs_group is not None:
                os.fchown(fd, -1 if projection.fs_user is None else projection.fs_user,
                          -1 if projection.fs_group is None else projection.fs_group)
            os.fchmod(fd, projection.mode)  # exactly the mode, whatever the umask
        finally:
            os.close(fd)


def _own_dirs(directory: Path, payload: Mapping[str, FileProjection]) -> None:
    """With an fsGroup, the version directory (and the volume's) belongs to that group and
    is setgid, as upstream's SetVolumeOwnership leaves them."""
    groups = {p.fs_group for p in payload.values() if p.fs_group is not None}
    if len(groups) != 1:
        return
    group = groups.pop()
    for path in (directory.parent, directory):
        os.chown(path, -1, group)
        os.chmod(path, os.stat(path).st_mode & 0o7777 | stat.S_ISGID | 0o550)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _create_visible_links(target: Path, payload: Mapping[str, FileProjection]) -> None:
    """``<key> -> ..data/<key>`` for each top-level name not linked yet."""
    for path in payload:
        top = path.split("/", 1)[0]
        link = target / top
        if not link.is_symlink():
            os.symlink(f"{DATA_DIR}/{top}", link)

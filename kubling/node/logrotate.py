"""Container log rotation, as the kubelet's ``ContainerLogManager`` does it.

Every ``MONITOR_PERIOD_SECONDS`` the log of each running container is looked at; one at or
over ``containerLogMaxSize`` is rotated:

1. files left by a rotation that failed half-way go (``*.tmp``, and an uncompressed file
   whose ``.gz`` exists);
2. the oldest rotated files go until at most ``MaxFiles - 2`` remain (the current log and
   the one about to be rotated make up the rest);
3. the rotated files still uncompressed are gzip-compressed (``<log>.<time>.gz``);
4. the current log is renamed ``<log>.<YYYYmmdd-HHMMSS>`` (kept uncompressed, so a reader
   still at its end finishes it) and the runtime is asked to reopen the log, which makes
   conmon start a new, empty file at the old path. Should the reopen fail, the rename is
   undone so that the next round tries again.

conmon is asked through its ``ctl`` fifo in the bundle: ``2 0 0`` is its
``REOPEN_LOGS_EVENT`` (type, then two numbers it parses and ignores). It reopens by
creating ``<log>.tmp`` and renaming it over ``<log>``, so the new file appears at once and
whole; ``wait_reopened`` waits for that.

The policy functions are plain file operations (``rotate`` takes the reopen as a
callable), so they are unit-tested on a temporary directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import glob
import gzip
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from kubling.api.validation._quantity import parse_quantity
from kubling.node import containers

log = logging.getLogger("kubling.node.logrotate")

#: The kubelet's defaults (``containerLogMaxSize``, ``containerLogMaxFiles``) and its
#: ``containerLogMonitorInterval``.
DEFAULT_MAX_SIZE = "10Mi"
DEFAULT_MAX_FILES = 5
MONITOR_PERIOD_SECONDS = 10.0
#: Go's ``20060102-150405``: the suffix of a rotated log.
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"
COMPRESS_SUFFIX = ".gz"
TMP_SUFFIX = ".tmp"
#: conmon's REOPEN_LOGS_EVENT on its ``ctl`` fifo.
REOPEN_MESSAGE = b"2 0 0\n"
#: How long conmon gets to put the new log file in place.
REOPEN_TIMEOUT_SECONDS = 2.0


class RotationError(Exception):
    """A rotation step failed; the log is left as it was (the next round retries)."""


@dataclasses.dataclass(frozen=True)
class LogRotatePolicy:
    """``max_size`` in bytes (negative: never rotate); ``max_files`` counts the current
    log too, so it must be at least 2."""

    max_size: int
    max_files: int

    @classmethod
    def parse(cls, max_size: str, max_files: int) -> LogRotatePolicy:
        """From the kubelet's flag values; ValueError with its wording when invalid."""
        if max_files <= 1:
            raise ValueError(f"invalid MaxFiles {max_files}, must be > 1")
        size = parse_quantity(max_size)
        if size is None or size.denominator != 1:
            raise ValueError(f"failed to parse container log max size {max_size!r}")
        return cls(max_size=int(size), max_files=max_files)


#: The kubelet's default policy (10Mi, 5 files).
DEFAULT_POLICY = LogRotatePolicy.parse(DEFAULT_MAX_SIZE, DEFAULT_MAX_FILES)


# -- the policy on files -------------------------------------------------------------------


def all_logs(path: Path) -> list[Path]:
    """The rotated files of log ``path`` still in use, oldest first, then ``path``."""
    inuse, _ = _split_unused(_rotated(path))
    return [*(Path(name) for name in sorted(inuse)), path]


def _rotated(path: Path) -> list[str]:
    return glob.glob(glob.escape(str(path)) + ".*")


def _split_unused(logs: list[str]) -> tuple[list[str], list[str]]:
    """Temporary files, and uncompressed files whose compressed copy exists, are unused."""
    present = set(logs)
    inuse: list[str] = []
    unused: list[str] = []
    for name in logs:
        if name.endswith(TMP_SUFFIX) or (not name.endswith(COMPRESS_SUFFIX)
                                         and name + COMPRESS_SUFFIX in present):
            unused.append(name)
        else:
            inuse.append(name)
    return inuse, unused


def needs_rotation(path: Path, policy: LogRotatePolicy) -> bool:
    if policy.max_size < 0:
        return False
    try:
        return path.stat().st_size >= policy.max_size
    except FileNotFoundError:
        return False


def rotate(path: Path, policy: LogRotatePolicy, reopen: Callable[[], None], *,
           now: datetime.datetime | None = None) -> Path:
    """Rotate log ``path`` (steps 1 to 4 of the module docstring); returns the rotated file.
    Blocking file I/O: call it off the event loop."""
    try:
        inuse, unused = _split_unused(_rotated(path))
        for name in unused:
            _remove(name)
        inuse.sort()  # the timestamp suffix sorts oldest first
        excess = max(0, len(inuse) - max(policy.max_files - 2, 0))
        for name in inuse[:excess]:
            _remove(name)
        for name in inuse[excess:]:
            if not name.endswith(COMPRESS_SUFFIX):
                compress(Path(name))
    except OSError as err:
        raise RotationError(f"failed to clean up the logs of {path}: {err}") from err
    stamp = (now or datetime.datetime.now()).strftime(TIMESTAMP_FORMAT)
    rotated = path.with_name(f"{path.name}.{stamp}")
    try:
        os.rename(path, rotated)
    except OSError as err:
        raise RotationError(f"failed to rotate log {path} to {rotated}: {err}") from err
    try:
        reopen()
    except Exception as err:
        if path.exists():  # the runtime did reopen, only late: the rotation happened
            return rotated
        try:
            os.rename(rotated, path)  # so that the next round tries again
        except OSError as back:
            log.error("cannot rename %s back to %s, its lines are now only in the rotated "
                      "file: %s", rotated, path, back)
        raise RotationError(f"failed to reopen container log {path}: {err}") from err
    return rotated


def compress(path: Path) -> Path:
    """gzip ``path`` into ``path.gz`` (through a ``.tmp`` file, so a crash leaves no
    half-written archive that looks whole), then remove ``path``."""
    tmp = Path(str(path) + TMP_SUFFIX)
    target = Path(str(path) + COMPRESS_SUFFIX)
    mode = path.stat().st_mode & 0o7777
    try:
        with path.open("rb") as source, gzip.open(tmp, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        os.chmod(tmp, mode)
        os.rename(tmp, target)
    finally:
        _remove(str(tmp))
    path.unlink()
    return target


def _remove(name: str) -> None:
    try:
        os.remove(name)
    except FileNotFoundError:
        pass


# -- conmon ----------------------------------------------------------------------------------


def reopen_with_conmon(bundle: Path, log_path: Path, *,
                       timeout: float = REOPEN_TIMEOUT_SECONDS) -> None:
    """Ask the container's conmon to reopen its log and wait until the new file is there.
    OSError when there is no conmon listening (the container has gone)."""
    fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, REOPEN_MESSAGE)
    finally:
        os.close(fd)
    wait_reopened(log_path, timeout=timeout)


def wait_reopened(log_path: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not log_path.exists():
        if time.monotonic() > deadline:
            raise OSError(f"conmon did not reopen {log_path} within {timeout:g}s")
        time.sleep(0.01)


# -- the manager -----------------------------------------------------------------------------


class ContainerLogManager:
    """Rotates the logs of the running containers under ``runtime_bundles`` every
    ``period`` seconds until cancelled. A container counts as running while its bundle
    exists and conmon has written no exit file for it."""

    def __init__(self, *, data_dir: Path, bundles: Path, exits: Path,
                 policy: LogRotatePolicy, period: float = MONITOR_PERIOD_SECONDS) -> None:
        self.data_dir = data_dir
        self.bundles = bundles
        self.exits = exits
        self.policy = policy
        self.period = period

    async def run(self) -> None:
        if self.policy.max_size < 0:
            return
        while True:
            await asyncio.sleep(self.period)
            try:
                await asyncio.to_thread(self.rotate_all)
            except OSError as err:
                log.warning("container log rotation failed: %s", err)

    def rotate_all(self) -> list[Path]:
        """One round over every running container; returns the files rotated."""
        rotated: list[Path] = []
        for bundle, log_path in self._running():
            if not needs_rotation(log_path, self.policy):
                continue
            try:
                rotated.append(rotate(log_path, self.policy, functools.partial(
                    reopen_with_conmon, bundle, log_path)))
            except RotationError as err:
                log.warning("%s", err)
        return rotated

    def _running(self) -> list[tuple[Path, Path]]:
        try:
            entries = list(os.scandir(self.bundles))
        except FileNotFoundError:
            return []
        out: list[tuple[Path, Path]] = []
        for entry in entries:
            cid = containers.ContainerId.parse(entry.name)
            if cid is None or (self.exits / entry.name).exists():
                continue
            paths = containers.ContainerPaths(self.data_dir / "pods" / cid.uid, cid.name)
            out.append((Path(entry.path), paths.log_path(cid.attempt)))
        return out

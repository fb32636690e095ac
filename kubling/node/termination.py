"""A container's termination message, as the kubelet reads it.

The kubelet bind-mounts an empty file, writable by any user, at the container's
``terminationMessagePath`` (default ``/dev/termination-log``); when the container has
terminated, the last 4 KiB of that file become ``state.terminated.message``. With
``terminationMessagePolicy: FallbackToLogsOnError`` and a non-zero exit code, an empty file
is replaced by the tail of the container's log: its last 80 lines, at most 2 KiB.

The file lives beside the container's attempts: ``containers/<name>/<attempt>.termination-log``
below the pod directory, so each restart starts with an empty one and ``lastState`` keeps the
message of the attempt it describes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kubling.api.meta import Object
from kubling.node import logs

__all__ = ["MAX_LOG_BYTES", "MAX_LOG_LINES", "MAX_MESSAGE_BYTES", "message", "prepare"]

#: The kubelet's limits (MaxContainerTerminationMessageLength, ...LogLength, ...LogLines).
MAX_MESSAGE_BYTES = 4 * 1024
MAX_LOG_BYTES = 2 * 1024
MAX_LOG_LINES = 80


def message_path(container_dir: Path, attempt: int) -> Path:
    return container_dir / f"{attempt}.termination-log"


def prepare(container: Object, container_dir: Path, attempt: int) -> Path | None:
    """Create the (empty, world-writable) message file of one attempt; None when the
    container has no ``terminationMessagePath``."""
    if not container.get("terminationMessagePath"):
        return None
    path = message_path(container_dir, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    os.fchmod(fd, 0o666)
    os.close(fd)
    return path


def message(container: Object, container_dir: Path, attempt: int, *, exit_code: int,
            log_path: Path) -> str:
    """What goes in ``state.terminated.message`` for this attempt ("" for nothing)."""
    fallback = (container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
                and exit_code != 0)
    text = ""
    if container.get("terminationMessagePath"):
        try:
            text = _tail(message_path(container_dir, attempt), MAX_MESSAGE_BYTES).decode(
                errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as err:
            return f"Error on reading termination log {message_path(container_dir, attempt)}: {err}"
    if not text and fallback:
        text = _log_tail(log_path)
    return text


def _tail(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of a file (the kubelet's ``tail.ReadAtMost``)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - limit))
        return handle.read(limit)


def _log_tail(log_path: Path) -> str:
    """The container's last lines, as the kubelet's fallback reads them (``TailLines``
    80, then ``LimitBytes`` 2 KiB: the first 2 KiB of those lines)."""
    window = 64 * 1024  # 80 lines for the message, plus the CRI framing of each
    with contextlib.suppress(OSError):
        raw = _tail(log_path, window)
        if len(raw) == window:
            raw = raw[raw.find(b"\n") + 1:]  # the first entry may be cut: drop it
        lines = logs.parse(raw)[-MAX_LOG_LINES:]
        text = b"".join(line.content + b"\n" for line in lines)
        return text[:MAX_LOG_BYTES].decode(errors="replace")
    return ""

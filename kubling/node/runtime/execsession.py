"""One interactive `runc exec`: a process in a running container whose stdio the caller
streams (``kubectl exec``, ``kubectl cp``), as the kubelet's streaming server needs it.

runc runs in the foreground, so its exit status is the process's. Without a TTY the
process's stdin, stdout and stderr are pipes to kubling. With one, runc's own stdio is the
slave of a host pseudo-terminal in raw mode: runc gives the process a terminal of its own
inside the container and copies between the two, and a window resize is the host
terminal's size plus a SIGWINCH to runc, which passes it on (runc's foreground TTY mode).

runc writes the process's pid to a file once it has started it; when that file is missing
after runc exited, the process never ran, and runc's message says why
(``exec: "x": executable file not found in $PATH``). The shell's exit codes stand for those
failures: 127 for a command that is not there, 126 for one that cannot be run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import struct
import termios
import tty
from collections.abc import Callable
from pathlib import Path

#: Exit codes of a command that could not be started (what a POSIX shell answers).
NOT_FOUND_EXIT = 127
NOT_EXECUTABLE_EXIT = 126
_READ_SIZE = 64 * 1024


class ExecStartError(Exception):
    """runc could not start the command; ``exit_code`` is 126 or 127."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ExecSession:
    """A started `runc exec`. ``read_stdout``/``read_stderr`` return ``b""`` at the end;
    ``wait`` returns the exit code or raises ExecStartError. Whoever made it calls
    ``close`` (kills a process still running, frees the terminal)."""

    def __init__(self, proc: asyncio.subprocess.Process, *, master: int | None,
                 pid_file: Path, log_file: Path) -> None:
        self._proc = proc
        self._master = master
        self._pid_file = pid_file
        self._log_file = log_file
        self._pid: int | None = None

    @property
    def tty(self) -> bool:
        return self._master is not None

    async def read_stdout(self) -> bytes:
        if self._master is not None:
            return await _read_fd(self._master)
        return await self._proc.stdout.read(_READ_SIZE) if self._proc.stdout else b""

    async def read_stderr(self) -> bytes:
        if self._master is not None or self._proc.stderr is None:
            return b""
        return await self._proc.stderr.read(_READ_SIZE)

    async def write_stdin(self, data: bytes) -> None:
        if self._master is not None:
            await _write_fd(self._master, data)
        elif self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await self._proc.stdin.drain()

    def close_stdin(self) -> None:
        """The client has no more input. A terminal gets end-of-file as the user types it
        (the line discipline inside the container turns ^D into one)."""
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")
        elif self._proc.stdin is not None:
            self._proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        if self._master is None or width <= 0 or height <= 0:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(self._master, termios.TIOCSWINSZ,
                        struct.pack("HHHH", min(height, 65535), min(width, 65535), 0, 0))
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGWINCH)

    async def wait(self) -> int:
        code = await self._proc.wait()
        if code != 0 and not self._pid_file.exists() and self._pid is None:
            message = _runc_error(self._log_file)
            if message:
                lowered = message.lower()
                not_found = ("not found" in lowered or "no such file" in lowered)
                raise ExecStartError(message, NOT_FOUND_EXIT if not_found
                                     else NOT_EXECUTABLE_EXIT)
        return code

    def started_pid(self) -> int | None:
        """The process's pid in the host's namespace, once runc has written it."""
        if self._pid is None:
            with contextlib.suppress(OSError, ValueError):
                self._pid = int(self._pid_file.read_text().strip())
        return self._pid

    async def close(self) -> None:
        """Kill what still runs (the process inside the container first: runc only passes
        signals on), reap runc and release every descriptor."""
        if self._proc.returncode is None:
            pid = self.started_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        if self._master is not None:
            with contextlib.suppress(OSError):
                asyncio.get_running_loop().remove_reader(self._master)
            with contextlib.suppress(OSError):
                asyncio.get_running_loop().remove_writer(self._master)
            os.close(self._master)
            self._master = None
        for path in (self._pid_file, self._log_file):
            with contextlib.suppress(OSError):
                path.unlink()


async def start(argv: list[str], *, pid_file: Path, log_file: Path, tty_mode: bool,
                stdin: bool, stdout: bool, stderr: bool) -> ExecSession:
    """Start ``argv`` (the full runc command line, ending in the user's command)."""
    pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    if not tty_mode:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=pipe if stdin else devnull, stdout=pipe if stdout else devnull,
            stderr=pipe if stderr else devnull)
        return ExecSession(proc, master=None, pid_file=pid_file, log_file=log_file)
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        os.set_blocking(master, False)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return ExecSession(proc, master=master, pid_file=pid_file, log_file=log_file)


async def _read_fd(fd: int) -> bytes:
    """Read a non-blocking descriptor; a terminal whose other side is closed ends."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, _READ_SIZE)
        except BlockingIOError:
            await _ready(loop.add_reader, loop.remove_reader, fd)
        except OSError as err:
            if err.errno == errno.EIO:  # the slave side is gone: runc has exited
                return b""
            raise


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await _ready(loop.add_writer, loop.remove_writer, fd)
        except OSError:
            return  # the process is gone; its input no longer matters


async def _ready(add: Callable[[int, Callable[[], None]], object],
                 remove: Callable[[int], object], fd: int) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    add(fd, wake)
    try:
        await waiter
    finally:
        remove(fd)


def _runc_error(log_file: Path) -> str:
    """The last error runc logged (``--log-format json``)."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("level") == "error":
                return str(record.get("msg", ""))
    return ""

"""Starting a container under conmon, CRI-O's container monitor.

conmon forks itself into the background (so the container is not our child and outlives the
agent), runs `runc create` with the container's stdio on pipes it holds, writes those streams
to a CRI-format log file, writes the exit code to `--exit-dir/<id>` when the container ends,
and an `oom` file in `--persist-dir` when the kernel OOM-kills inside the container's memory
cgroup.

We learn whether `runc create` worked through conmon's sync pipe: the number of an inherited
pipe goes in `_OCI_SYNCPIPE`, and conmon writes one JSON line to it once runc create has
finished: `{"data": <container pid>}`, or `{"data": -1, "message": "<runc's stderr>"}`.
It keeps the pipe open afterwards (it would write an exec's exit code there), and ignores
SIGPIPE, so we read one line and close our end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConmonError", "ConmonRun", "run_conmon"]

SYNC_ENV = "_OCI_SYNCPIPE"


class ConmonError(Exception):
    """conmon or the runtime it ran failed; the message is theirs, trimmed."""


@dataclass(frozen=True)
class ConmonRun:
    """One `conmon` invocation for a container (the CRI-O flag set that works with
    conmon 2.1 and runc 1.1)."""

    conmon: str
    runc: str
    runc_root: Path
    container_id: str
    bundle: Path
    log_path: Path
    exit_dir: Path
    socket_dir: Path
    stdin: bool = False
    stdin_once: bool = False
    terminal: bool = False

    @property
    def conmon_log(self) -> Path:
        """conmon's own stderr (it reports argument and setup errors there)."""
        return self.bundle / "conmon.log"

    def argv(self) -> list[str]:
        argv = [
            self.conmon,
            "--api-version",  # a flag (G_OPTION_ARG_NONE): API 1, JSON "data" replies
            "--cid", self.container_id,
            "--cuuid", self.container_id,
            "--name", self.container_id,
            "--runtime", self.runc,
            "--bundle", str(self.bundle),
            "--container-pidfile", str(self.bundle / "pidfile"),
            "--conmon-pidfile", str(self.bundle / "conmon.pid"),
            "--persist-dir", str(self.bundle),
            "--log-path", f"k8s-file:{self.log_path}",
            "--exit-dir", str(self.exit_dir),
            "--socket-dir-path", str(self.socket_dir),
            "--runtime-arg", f"--root={self.runc_root}",
            "--runtime-arg", f"--log={self.bundle / 'runc.log'}",
            "--runtime-arg", "--log-format=json",
            "--log-level", "error",
        ]
        if self.stdin:
            argv.append("--stdin")
            if not self.stdin_once:
                argv.append("--leave-stdin-open")
        if self.terminal:
            argv.append("--terminal")
        return argv


async def run_conmon(run: ConmonRun, *, timeout: float) -> int:
    """Start conmon for `run` and return the container's pid once `runc create` succeeded;
    raise ConmonError with runc's message if it did not."""
    read_fd, write_fd = os.pipe()
    try:
        with open(run.conmon_log, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *run.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(write_fd,),
                env=_environment(write_fd),
                cwd=run.bundle,  # conmon writes its `oom` file into its working directory
                start_new_session=True,
            )
        os.close(write_fd)
        write_fd = -1
        # The first stage only forks the monitor and exits: quick.
        if await asyncio.wait_for(proc.wait(), timeout) != 0:
            raise ConmonError(f"conmon failed: {_tail(run.conmon_log)}")
        fd, read_fd = read_fd, -1  # _read_line owns it from here
        line = await _read_line(fd, timeout)
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    return _parse_sync(line, run.conmon_log)


def _environment(sync_fd: int) -> dict[str, str]:
    """conmon passes its environment on to runc (not to the container, whose environment is
    in config.json): PATH is all either needs."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), SYNC_ENV: str(sync_fd)}


async def _read_line(fd: int, timeout: float) -> bytes:
    """One line from pipe `fd` without blocking the loop; closes `fd`.

    The read transport owns the pipe once connected and closes it itself — later, on the
    loop's next turn under uvloop. Closing the file here as well (a ``with`` block) would
    close the descriptor number twice, the second time when it may already belong to the
    next subprocess's pipe."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        return await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError as exc:
        raise ConmonError(f"runc create did not finish within {timeout:g}s") from exc
    finally:
        transport.close()


def _parse_sync(line: bytes, conmon_log: Path) -> int:
    if not line:
        raise ConmonError(f"conmon exited before runc create finished: {_tail(conmon_log)}")
    try:
        message = json.loads(line)
        value = int(message["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConmonError(f"unexpected message from conmon: {line[:200]!r}") from exc
    if value < 0:
        text = str(message.get("message", "")).strip() or _tail(conmon_log)
        raise ConmonError(text or f"runc create failed (conmon reported {value})")
    return value


def _tail(path: Path, limit: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_bytes()[-limit:].decode(errors="replace").strip() or "(no output)"
    return "(no output)"


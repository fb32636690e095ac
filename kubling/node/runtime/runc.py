"""Container lifecycle with runc, each container watched by its own conmon.

Containers are not children of kubling: conmon daemonizes before it runs `runc create`, so an
agent restart leaves them running and `Runtime.list()` on the same root finds them again.
Everything lives below `root` (the agent's `<data-dir>/runtime`):

    root/runc/                runc's state (--root): one directory per container
    root/bundles/<id>/        config.json, pidfile, conmon.pid, conmon.log, runc.log,
                              `exit` and `oom` (conmon's persist dir), `started`,
                              `exec-*.pid`/`exec-*.log` while an exec session runs
    root/exits/<id>           the exit code, written by conmon when the container ends
    root/sockets/<id>         conmon's link to the attach socket in the bundle

On the host a container touches only its cgroup (`ContainerConfig.cgroups_path`, always
below /kubling) and the namespaces it was told to join.

Every runc call is an asyncio subprocess, so the event loop never waits on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubling.node.runtime import attach as conmon_attach
from kubling.node.runtime import execsession, runcstate
from kubling.node.runtime.cgroups import oom_kill_count, remove_cgroup
from kubling.node.runtime.conmon import ConmonError, ConmonRun, run_conmon
from kubling.node.runtime.spec import ContainerConfig, oci_spec

__all__ = ["ContainerNotFoundError", "ContainerRuntimeError", "ContainerState", "Runtime"]

CREATED = "created"
RUNNING = "running"
STOPPED = "stopped"
UNKNOWN = "unknown"

#: How long `stop` waits for SIGKILL to take effect before giving up.
KILL_GRACE = 10.0
#: How long a stopped container's exit file may lag behind runc's state (conmon drains the
#: container's output and fsyncs the log first).
EXIT_FILE_GRACE = 2.0
_CREATE_TIMEOUT = 60.0
_SIGKILL_EXIT = 128 + signal.SIGKILL


class ContainerRuntimeError(Exception):
    """A runtime operation failed; the message says what and, where it can, what to do."""


class ContainerNotFoundError(ContainerRuntimeError):
    """No container of that id under this runtime's root."""


@dataclass(frozen=True)
class ContainerState:
    """What the runtime knows about one container. `status` is created, running, stopped or
    unknown (a bundle without runc state: a create that did not finish; delete it)."""

    id: str
    status: str
    pid: int
    exit_code: int | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    oom_killed: bool
    bundle: Path


class Runtime:
    """runc + conmon below `root`. `runc` and `conmon` are command names or paths."""

    def __init__(self, root: Path, *, runc: str = "runc", conmon: str = "conmon") -> None:
        self.root = Path(os.path.abspath(root))
        self.runc_root = self.root / "runc"
        self.bundles = self.root / "bundles"
        self.exits = self.root / "exits"
        self.sockets = self.root / "sockets"
        self._runc_name = runc
        self._conmon_name = conmon

    # --- lifecycle --------------------------------------------------------------------

    async def create(
        self, cfg: ContainerConfig, *, log_path: Path, stdin: bool = False, stdin_once: bool = False
    ) -> None:
        """Write the bundle and have conmon run `runc create`; returns once the container
        exists (created, not yet started). On failure nothing is left and the error carries
        runc's message (e.g. `exec: "x": executable file not found in $PATH`)."""
        spec = oci_spec(cfg)
        _check_rootfs(cfg)
        runc, conmon = self._runc_path(), self._conmon_path()
        if (self.runc_root / cfg.id).exists():  # runc's state dir: cheaper than `runc state`
            raise ContainerRuntimeError(f"container {cfg.id} already exists: delete it first")
        self._remove_files(cfg.id)  # a bundle left by a create that crashed half-way
        bundle = self._prepare_bundle(cfg.id, spec)
        log_path = Path(os.path.abspath(log_path))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        run = ConmonRun(
            conmon=conmon, runc=runc, runc_root=self.runc_root, container_id=cfg.id,
            bundle=bundle, log_path=log_path, exit_dir=self.exits, socket_dir=self.sockets,
            stdin=stdin, stdin_once=stdin_once, terminal=cfg.terminal,
        )
        try:
            await run_conmon(run, timeout=_CREATE_TIMEOUT)
        except (ConmonError, OSError) as exc:
            await self.delete(cfg.id)
            raise ContainerRuntimeError(f"cannot create container {cfg.id}: {exc}") from exc
        except asyncio.CancelledError:
            # The agent gave up on this container: do not leave half of it behind.
            await asyncio.shield(self.delete(cfg.id))
            raise

    async def start(self, container_id: str) -> None:
        """Run the container's process (`runc start`); the start time is kept in the bundle.
        It is taken before `runc start`: a process that exits at once may be gone (and its
        exit time written) before `runc start` returns."""
        started = time.time()
        await self._runc("start", container_id)
        _write_atomic(self.bundles / container_id / "started", repr(started))

    async def kill(
        self, container_id: str, sig: int = signal.SIGTERM, *, every_process: bool = False
    ) -> None:
        """Send `sig` to the container's init process (every process of its cgroup with
        `every_process`). A container that already stopped is left alone."""
        args = ["kill", *(["--all"] if every_process else []), container_id, str(int(sig))]
        try:
            await self._runc(*args)
        except ContainerNotFoundError:
            raise  # its message ("does not exist") is not the benign kind below
        except ContainerRuntimeError as exc:
            if "not running" not in str(exc) and "process already finished" not in str(exc):
                raise

    async def stop(
        self, container_id: str, timeout: float, *, sig: int = signal.SIGTERM
    ) -> int:
        """Ask the container to stop with `sig`, SIGKILL every process in it once `timeout`
        seconds have passed, and return the exit code."""
        state = await self.state(container_id)
        if state.status == STOPPED and state.exit_code is not None:
            return state.exit_code
        if state.status == CREATED:
            timeout = 0  # `runc init` waiting to be started does not act on SIGTERM
        elif state.status == RUNNING:
            await self.kill(container_id, sig)
        with contextlib.suppress(TimeoutError):
            return await self.wait(container_id, timeout)
        await self.kill(container_id, signal.SIGKILL, every_process=True)
        return await self.wait(container_id, KILL_GRACE)

    async def delete(self, container_id: str) -> None:
        """Remove every trace of the container: runc state (killing what still runs), its
        conmon, cgroups, bundle, exit file and attach link. Idempotent."""
        cgroup = self._cgroup_of(container_id)
        with contextlib.suppress(ContainerNotFoundError):
            await self._runc("delete", "--force", container_id)
        await self._reap_conmon(container_id)
        if cgroup is not None:
            await _remove_cgroup(cgroup, container_id)
        self._remove_files(container_id)

    async def exec(self, container_id: str, argv: list[str], *,
                   timeout: float) -> tuple[int, bytes]:
        """Run `argv` inside the running container (`runc exec`, the container's own env,
        user and working directory) and return its exit code and combined output. After
        `timeout` seconds the process is SIGKILLed (inside the container too: runc writes its
        pid) and TimeoutError is raised, so a hung probe never piles up processes."""
        if not argv:
            raise ContainerRuntimeError("exec: no command given")
        bundle = self.bundles / container_id
        if not bundle.is_dir():
            raise ContainerNotFoundError(f"container {container_id} not found in {self.root}")
        pid_file = bundle / f"exec-{os.getpid()}-{time.monotonic_ns()}.pid"
        args = [self._runc_path(), "--root", str(self.runc_root), "exec", "--tty=false",
                "--pid-file", str(pid_file), container_id, *argv]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        finally:
            with contextlib.suppress(OSError):
                pid_file.unlink()
        code = proc.returncode if proc.returncode is not None else -1
        if code != 0 and b"does not exist" in out and not pid_file.exists():
            state = await self._runc_state(container_id)
            if state is None:
                raise ContainerNotFoundError(f"container {container_id} does not exist")
        return code, out

    async def exec_interactive(self, container_id: str, argv: list[str], *, tty: bool,
                               stdin: bool, stdout: bool,
                               stderr: bool) -> execsession.ExecSession:
        """Start `argv` inside the running container for a client to stream (``kubectl
        exec``): the container's env, user, working directory, namespaces and cgroup, with
        a terminal when `tty`. The caller owns the session and must ``close`` it."""
        if not argv:
            raise ContainerRuntimeError("exec: no command given")
        bundle = self.bundles / container_id
        if not bundle.is_dir():
            raise ContainerNotFoundError(f"container {container_id} not found in {self.root}")
        stamp = f"{os.getpid()}-{time.monotonic_ns()}"
        pid_file, log_file = bundle / f"exec-{stamp}.pid", bundle / f"exec-{stamp}.log"
        args = [self._runc_path(), "--root", str(self.runc_root), "--log", str(log_file),
                "--log-format", "json", "exec", f"--tty={'true' if tty else 'false'}",
                *(["--env", "TERM=xterm"] if tty else []),
                "--pid-file", str(pid_file), container_id, *argv]
        return await execsession.start(args, pid_file=pid_file, log_file=log_file,
                                       tty_mode=tty, stdin=stdin, stdout=stdout,
                                       stderr=stderr)

    async def attach(self, container_id: str, *, tty: bool) -> conmon_attach.AttachSession:
        """Stream the running container's own stdio (its conmon's attach socket)."""
        bundle = self.bundles / container_id
        try:
            return await conmon_attach.attach(bundle, tty=tty)
        except OSError as err:
            raise ContainerNotFoundError(
                f"container {container_id} has no attach socket: {err.strerror or err}"
            ) from err

    # --- queries ----------------------------------------------------------------------

    async def state(self, container_id: str) -> ContainerState:
        """The container's status, exit code, times and whether it was OOM-killed."""
        data = await self._runc_state(container_id)
        if data is None and not (self.bundles / container_id).is_dir():
            raise ContainerNotFoundError(f"container {container_id} not found in {self.root}")
        return await self._compose(container_id, data)

    async def list(self) -> list[ContainerState]:
        """Every container under this root, including those a previous agent made: runc's
        list plus bundles runc does not know (status unknown)."""
        if not self.runc_root.is_dir() and not self.bundles.is_dir():
            return []
        out = await self._runc("list", "--format", "json")
        entries: list[dict[str, Any]] = json.loads(out) or []
        known = {entry["id"]: entry for entry in entries}
        orphans = [p.name for p in _children(self.bundles) if p.name not in known]
        states = [self._compose(cid, data) for cid, data in known.items()]
        states += [self._compose(cid, None) for cid in orphans]
        return sorted(await asyncio.gather(*states), key=lambda s: s.id)

    async def wait(self, container_id: str, timeout: float | None = None) -> int:
        """The container's exit code, once conmon has written it; TimeoutError after
        `timeout` seconds. Fails if conmon is gone without writing one."""
        exit_file = self.exits / container_id
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while True:
            code = _read_exit(exit_file)
            if code is not None:
                return code
            if not self._conmon_alive(container_id):
                code = _read_exit(exit_file)  # it may have written just before it exited
                if code is not None:
                    return code
                if not (self.bundles / container_id).is_dir():
                    raise ContainerNotFoundError(f"container {container_id} not found")
                raise ContainerRuntimeError(
                    f"container {container_id}: its conmon is gone without recording an exit "
                    "code (killed?); delete the container"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"container {container_id} still running after {timeout}s")
            pause = delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0))
            await asyncio.sleep(pause)
            delay = min(delay * 1.5, 0.25)

    # --- internals --------------------------------------------------------------------

    async def _compose(self, container_id: str, data: dict[str, Any] | None) -> ContainerState:
        bundle = self.bundles / container_id
        status = _status(data["status"]) if data is not None else UNKNOWN
        exit_file = self.exits / container_id
        code = _read_exit(exit_file)
        if data is not None and status == STOPPED and code is None:
            code = await self._await_exit_file(container_id)
        if data is None and code is not None:
            status = STOPPED
        return ContainerState(
            id=container_id,
            status=status,
            pid=int(data.get("pid", 0)) if data is not None and status != STOPPED else 0,
            exit_code=code,
            created_at=_parse_time(data.get("created")) if data is not None else None,
            started_at=_read_started(bundle / "started"),
            finished_at=_mtime(exit_file) if code is not None else None,
            oom_killed=code is not None and self._oom_killed(container_id, code),
            bundle=bundle,
        )

    async def _await_exit_file(self, container_id: str) -> int | None:
        deadline = time.monotonic() + EXIT_FILE_GRACE
        while time.monotonic() < deadline:
            code = _read_exit(self.exits / container_id)
            if code is not None or not self._conmon_alive(container_id):
                return code if code is not None else _read_exit(self.exits / container_id)
            await asyncio.sleep(0.02)
        return None

    def _oom_killed(self, container_id: str, code: int) -> bool:
        """conmon's `oom` file (it listens to the memory cgroup's OOM events), or, should
        that event be missed, a SIGKILL exit with the cgroup's oom_kill counter raised."""
        if (self.bundles / container_id / "oom").exists():
            return True
        cgroup = self._cgroup_of(container_id)
        return code == _SIGKILL_EXIT and cgroup is not None and bool(oom_kill_count(cgroup))

    async def _runc_state(self, container_id: str) -> dict[str, Any] | None:
        """What ``runc state`` answers, read from runc's state directory (``runcstate``:
        an exec of runc costs ~8 ms of CPU); runc itself only when that cannot be read."""
        with contextlib.suppress(runcstate.StateFormatError):
            return runcstate.read_state(self.runc_root, container_id)
        try:
            out = await self._runc("state", container_id)
        except ContainerNotFoundError:
            return None
        state: dict[str, Any] = json.loads(out)
        return state

    async def _runc(self, *args: str) -> bytes:
        """Run `runc --root <root>/runc <args>`; runc's error message becomes the exception's."""
        argv = [self._runc_path(), "--root", str(self.runc_root), "--log-format", "json", *args]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode == 0:
            return out
        message = _runc_message(err) or f"exit status {proc.returncode}"
        what = "runc " + " ".join(args)
        if "does not exist" in message:
            raise ContainerNotFoundError(f"{what}: {message}")
        raise ContainerRuntimeError(f"{what}: {message}")

    def _prepare_bundle(self, container_id: str, spec: dict[str, Any]) -> Path:
        for directory in (self.runc_root, self.bundles, self.exits, self.sockets):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        bundle = self.bundles / container_id
        bundle.mkdir(mode=0o700)
        _write_atomic(bundle / "config.json", json.dumps(spec, indent=1))
        return bundle

    def _cgroup_of(self, container_id: str) -> str | None:
        try:
            spec = json.loads((self.bundles / container_id / "config.json").read_text())
        except (OSError, ValueError):
            return None
        path = spec.get("linux", {}).get("cgroupsPath")
        return path if isinstance(path, str) else None

    def _conmon_pid(self, container_id: str) -> int | None:
        """conmon's pid from its pidfile, if that process is still this container's conmon
        (pids are reused: the command line must name the container)."""
        try:
            pid = int((self.bundles / container_id / "conmon.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if container_id.encode() in cmdline else None

    def _conmon_alive(self, container_id: str) -> bool:
        pid = self._conmon_pid(container_id)
        return pid is not None and not _is_zombie(pid)

    async def _reap_conmon(self, container_id: str) -> None:
        """Wait for the container's conmon to finish (it writes the exit files last, and
        must not write them into a bundle we are removing); SIGKILL it if it hangs on."""
        deadline = time.monotonic() + 5.0
        while self._conmon_alive(container_id):
            if time.monotonic() >= deadline:
                pid = self._conmon_pid(container_id)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                break
            await asyncio.sleep(0.02)

    def _remove_files(self, container_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.exits / container_id).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.sockets / container_id).unlink()
        shutil.rmtree(self.bundles / container_id, ignore_errors=True)

    def _runc_path(self) -> str:
        return _which(self._runc_name, "runc not found ({}) — apt-get install runc")

    def _conmon_path(self) -> str:
        return _which(self._conmon_name, "conmon not found ({}) — apt-get install conmon")


def _which(name: str, message: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ContainerRuntimeError(message.format(name))
    return os.path.abspath(path)  # conmon execv()s the runtime: it needs a path


def _check_rootfs(cfg: ContainerConfig) -> None:
    if not Path(cfg.rootfs).is_dir():
        raise ContainerRuntimeError(
            f"container {cfg.id}: root filesystem {cfg.rootfs} is not a directory "
            "(was the image's rootfs mounted?)"
        )


async def _remove_cgroup(path: str, container_id: str) -> None:
    """runc delete removes the cgroup; this catches what it leaves when it was interrupted.
    Processes take a moment to leave a cgroup after SIGKILL, hence the retries."""
    left = remove_cgroup(path)
    for _ in range(50):
        if not left:
            return
        await asyncio.sleep(0.02)
        left = remove_cgroup(path)
    raise ContainerRuntimeError(
        f"container {container_id}: cgroup {left[0]} still has processes; kill them and retry"
    )


def _status(raw: str) -> str:
    if raw in (CREATED, RUNNING, STOPPED):
        return raw
    if raw == "paused":
        return RUNNING
    return UNKNOWN


def _runc_message(stderr: bytes) -> str:
    """The last `msg` of runc's JSON log lines on stderr (raw text if it is not JSON)."""
    messages: list[str] = []
    for line in stderr.decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if line.strip():
                messages.append(line.strip())
            continue
        if isinstance(record, dict) and record.get("msg"):
            messages.append(str(record["msg"]))
    return messages[-1] if messages else ""


def _read_exit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None  # written atomically by conmon; an empty file is not one of its


def _read_started(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(path.read_text()), UTC)
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _is_zombie(pid: int) -> bool:
    """A dead process its parent has not reaped yet counts as gone (conmon's parent is init
    or a subreaper, which may reap late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _children(directory: Path) -> list[Path]:
    try:
        return [entry for entry in directory.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return []


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

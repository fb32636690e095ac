"""Containers for real, under runc and conmon, from a busybox root filesystem in a plain
directory: exit codes, CRI logs, stop, OOM, errors, namespaces, surviving their creator, and
that nothing is left on the host afterwards.

Every runc id is `kubling-test-<random>-<name>` and every cgroup `/kubling/test-<random>/...`,
so the fixture can remove exactly what a test made, even when it failed half-way.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubling.node.runtime import (
    RUNTIME_DEFAULT,
    ContainerConfig,
    ContainerNotFoundError,
    ContainerRuntimeError,
    Mount,
    Namespaces,
    Resources,
    Runtime,
)
from kubling.node.runtime.cgroups import remove_cgroup

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture(autouse=True, scope="module")
def _real_runtime() -> None:
    """Containers are checked under the real runc and conmon: without them (or without
    root) these tests fail — install.sh installs both — rather than skip."""
    if os.geteuid() != 0:
        pytest.fail("runc needs root: run the tests as root")
    if shutil.which("runc") is None or shutil.which("conmon") is None:
        pytest.fail("runc and conmon are needed — apt-get install runc conmon")

T = TypeVar("T")
APPLETS = ["sh", "echo", "sleep", "cat", "id", "hostname", "grep", "touch", "tty", "wc",
           "true", "cut", "tr", "sort", "ls", "unshare"]
CRI_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(?:Z|[+-]\d\d:\d\d)) "
    r"(?P<stream>stdout|stderr) (?P<tag>[FP]) (?P<text>.*)$"
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root filesystem: busybox and its applet links, /etc/passwd and /etc/group."""
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:\n")
    return root


@dataclass
class Env:
    """One test's runtime, names and log directory."""

    runtime: Runtime
    rootfs: Path
    logs: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def cgroup_parent(self) -> str:
        return f"/kubling/test-{self.tag}"

    def config(self, name: str, args: list[str], **changes: Any) -> ContainerConfig:
        cfg = ContainerConfig(
            id=f"kubling-test-{self.tag}-{name}",
            rootfs=self.rootfs,
            args=args,
            cgroups_path=f"{self.cgroup_parent}/{name}",
        )
        return replace(cfg, **changes)

    def log(self, cfg: ContainerConfig) -> Path:
        return self.logs / f"{cfg.id}.log"

    async def run(self, cfg: ContainerConfig, timeout: float = 10) -> int:
        """Create, start and wait for a container; its exit code."""
        await self.runtime.create(cfg, log_path=self.log(cfg))
        await self.runtime.start(cfg.id)
        return await self.runtime.wait(cfg.id, timeout)

    async def output(self, cfg: ContainerConfig) -> list[str]:
        """Run a container to its end and return its output lines (stdout and stderr)."""
        code = await self.run(cfg)
        lines = [parse(line)["text"] for line in self.log(cfg).read_text().splitlines()]
        assert code == 0, lines
        return lines

    def cgroup_leftovers(self) -> list[str]:
        return sorted(glob.glob(f"/sys/fs/cgroup/*/kubling/test-{self.tag}*"))


@pytest.fixture
def env(tmp_path: Path, rootfs: Path) -> Iterator[Env]:
    """A runtime below tmp_path; whatever its test left is removed and reported."""
    env = Env(Runtime(tmp_path / "runtime"), rootfs, tmp_path / "logs")
    try:
        yield env
    finally:
        leaks = _clean_up(env)
    assert leaks == [], "left behind"


def _clean_up(env: Env) -> list[str]:
    """Delete every container of the test's runtime (through runc itself should the runtime
    fail), then the test's cgroup parent; return whatever still remains."""
    for cid in _runc_ids(env.runtime.runc_root):
        try:
            run(env.runtime.delete(cid))
        except ContainerRuntimeError:
            subprocess.run(["runc", "--root", str(env.runtime.runc_root), "delete", "--force",
                            cid], capture_output=True, check=False)
    remove_cgroup(env.cgroup_parent)
    left = [f"runc container {cid}" for cid in _runc_ids(env.runtime.runc_root)]
    left += [f"bundle {p.name}" for p in _entries(env.runtime.bundles)]
    left += [f"exit file {p.name}" for p in _entries(env.runtime.exits)]
    return left + env.cgroup_leftovers()


def _runc_ids(runc_root: Path) -> list[str]:
    listed = subprocess.run(["runc", "--root", str(runc_root), "list", "--format", "json"],
                            capture_output=True, text=True, check=False)
    return [c["id"] for c in json.loads(listed.stdout or "null") or []]


def _entries(directory: Path) -> list[Path]:
    return list(directory.iterdir()) if directory.is_dir() else []


def parse(line: str) -> dict[str, str]:
    match = CRI_LINE.match(line)
    assert match, f"not a CRI log line: {line!r}"
    return match.groupdict()


async def wait_for_output(path: Path, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


# --- exit codes and logs ------------------------------------------------------------------


def test_exit_code_and_cri_log(env: Env) -> None:
    cfg = env.config("exit", ["sh", "-c", "echo out; echo err >&2; exit 3"])

    async def scenario() -> None:
        before = datetime.now().astimezone()
        await env.runtime.create(cfg, log_path=env.log(cfg))
        created = await env.runtime.state(cfg.id)
        assert created.status == "created" and created.pid > 0 and created.exit_code is None
        await env.runtime.start(cfg.id)
        assert await env.runtime.wait(cfg.id, 10) == 3
        state = await env.runtime.state(cfg.id)
        assert state.status == "stopped"
        assert state.exit_code == 3
        assert state.oom_killed is False
        assert state.started_at is not None and state.finished_at is not None
        assert before <= state.started_at <= state.finished_at

    run(scenario())
    records = [parse(line) for line in env.log(cfg).read_text().splitlines()]
    assert [(r["stream"], r["tag"], r["text"]) for r in records] == [
        ("stdout", "F", "out"), ("stderr", "F", "err"),
    ]
    for record in records:
        # RFC3339Nano: nine fractional digits; Python keeps microseconds.
        datetime.fromisoformat(record["time"])


def test_kill_and_wait_timeout(env: Env) -> None:
    cfg = env.config("kill", ["sleep", "1000"])

    async def scenario() -> None:
        await env.runtime.create(cfg, log_path=env.log(cfg))
        await env.runtime.start(cfg.id)
        with pytest.raises(TimeoutError):
            await env.runtime.wait(cfg.id, 0.1)
        assert (await env.runtime.state(cfg.id)).status == "running"
        await env.runtime.kill(cfg.id, signal.SIGKILL)
        assert await env.runtime.wait(cfg.id, 5) == 137
        await env.runtime.kill(cfg.id, signal.SIGTERM)  # a stopped container: nothing to do

    run(scenario())


# --- stop ---------------------------------------------------------------------------------


def test_stop_honours_sigterm(env: Env) -> None:
    script = "trap 'echo terminated; exit 7' TERM; echo ready; sleep 1000 & wait"
    cfg = env.config("term", ["sh", "-c", script])

    async def scenario() -> None:
        await env.runtime.create(cfg, log_path=env.log(cfg))
        await env.runtime.start(cfg.id)
        await wait_for_output(env.log(cfg), "ready")
        state = await env.runtime.state(cfg.id)
        assert state.status == "running" and state.pid > 0
        started = time.monotonic()
        assert await env.runtime.stop(cfg.id, timeout=10) == 7
        assert time.monotonic() - started < 5
        assert (await env.runtime.state(cfg.id)).status == "stopped"

    run(scenario())
    assert "terminated" in env.log(cfg).read_text()


def test_stop_kills_after_the_timeout(env: Env) -> None:
    cfg = env.config("stubborn", ["sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait"])

    async def scenario() -> None:
        await env.runtime.create(cfg, log_path=env.log(cfg))
        await env.runtime.start(cfg.id)
        await wait_for_output(env.log(cfg), "ready")
        started = time.monotonic()
        assert await env.runtime.stop(cfg.id, timeout=0.5) == 137
        assert 0.5 <= time.monotonic() - started < 5
        assert await env.runtime.stop(cfg.id, timeout=0.5) == 137  # again: already stopped

    run(scenario())


def test_stop_a_created_container(env: Env) -> None:
    cfg = env.config("never-started", ["true"])

    async def scenario() -> None:
        await env.runtime.create(cfg, log_path=env.log(cfg))
        assert await env.runtime.stop(cfg.id, timeout=5) == 137

    run(scenario())


# --- surviving the agent ------------------------------------------------------------------

CREATOR = """
import asyncio, json, os, sys
from pathlib import Path
from kubling.node.runtime import ContainerConfig, Runtime
args = json.loads(sys.argv[1])
async def main():
    runtime = Runtime(Path(args["root"]))
    cfg = ContainerConfig(id=args["id"], rootfs=args["rootfs"], args=["sleep", "1000"],
                          cgroups_path=args["cgroup"])
    await runtime.create(cfg, log_path=Path(args["log"]))
    await runtime.start(cfg.id)
asyncio.run(main())
print(os.getpid())
"""


def test_containers_survive_their_creator(env: Env) -> None:
    cfg = env.config("survivor", ["sleep", "1000"])
    request = {"root": str(env.runtime.root), "id": cfg.id, "rootfs": str(env.rootfs),
               "cgroup": cfg.cgroup, "log": str(env.log(cfg))}
    creator = subprocess.run(
        [sys.executable, "-c", CREATOR, json.dumps(request)],
        capture_output=True, text=True, timeout=30, check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert creator.returncode == 0, creator.stderr
    creator_pid = int(creator.stdout)

    async def scenario() -> None:
        restarted = Runtime(env.runtime.root)  # the agent, after a restart
        [found] = await restarted.list()
        assert (found.id, found.status) == (cfg.id, "running")
        state = await restarted.state(cfg.id)
        conmon = int((state.bundle / "conmon.pid").read_text())
        assert ppid(state.pid) == conmon  # the container is conmon's child...
        assert ppid(conmon) not in (creator_pid, os.getpid())  # ...and conmon nobody's of ours
        assert not Path(f"/proc/{creator_pid}").exists()
        await restarted.delete(cfg.id)
        assert await restarted.list() == []

    run(scenario())


def test_list_after_restart(env: Env) -> None:
    running = env.config("running", ["sleep", "1000"])
    done = env.config("done", ["sh", "-c", "exit 5"])
    created = env.config("created", ["true"])

    async def scenario() -> None:
        await env.runtime.create(running, log_path=env.log(running))
        await env.runtime.start(running.id)
        assert await env.run(done) == 5
        await env.runtime.create(created, log_path=env.log(created))

        states = {s.id: s for s in await Runtime(env.runtime.root).list()}
        assert {i: (s.status, s.exit_code) for i, s in states.items()} == {
            running.id: ("running", None),
            done.id: ("stopped", 5),
            created.id: ("created", None),
        }
        assert states[running.id].pid > 0 and states[done.id].pid == 0

    run(scenario())


# --- resources ----------------------------------------------------------------------------


def test_memory_limit_oom_kill(env: Env) -> None:
    # The string doubles until it no longer fits in 16 MiB; sh cannot catch SIGKILL.
    hog = "x=0123456789abcdef; while true; do x=$x$x; done"
    cfg = env.config("oom", ["sh", "-c", hog], resources=Resources(memory_limit=16 << 20))

    async def scenario() -> None:
        assert await env.run(cfg, timeout=30) == 137
        state = await env.runtime.state(cfg.id)
        assert state.exit_code == 137
        assert state.oom_killed is True

    run(scenario())


@pytest.mark.skipif(not Path("/sys/fs/cgroup/cpu/cpu.shares").exists(), reason="cgroup v1 only")
def test_resources_land_in_the_cgroup(env: Env) -> None:
    resources = Resources(cpu_shares=512, cpu_quota=50_000, cpu_period=100_000,
                          memory_limit=64 << 20, pids_limit=64)
    cfg = env.config("limits", ["sleep", "1000"], resources=resources)

    async def scenario() -> dict[str, str]:
        await env.runtime.create(cfg, log_path=env.log(cfg))
        base = "/sys/fs/cgroup/{}" + cfg.cgroup + "/{}"
        files = {
            "cpu.shares": base.format("cpu", "cpu.shares"),
            "cpu.cfs_quota_us": base.format("cpu", "cpu.cfs_quota_us"),
            "cpu.cfs_period_us": base.format("cpu", "cpu.cfs_period_us"),
            "memory.limit_in_bytes": base.format("memory", "memory.limit_in_bytes"),
            "pids.max": base.format("pids", "pids.max"),
        }
        return {name: Path(path).read_text().strip() for name, path in files.items()}

    assert run(scenario()) == {
        "cpu.shares": "512",
        "cpu.cfs_quota_us": "50000",
        "cpu.cfs_period_us": "100000",
        "memory.limit_in_bytes": str(64 << 20),
        "pids.max": "64",
    }


# --- errors and cleanup -------------------------------------------------------------------


def test_missing_executable_fails_create_and_leaves_nothing(env: Env) -> None:
    cfg = env.config("noexec", ["no-such-command"])

    async def scenario() -> None:
        with pytest.raises(ContainerRuntimeError, match="executable file not found"):
            await env.runtime.create(cfg, log_path=env.log(cfg))
        assert await env.runtime.list() == []
        with pytest.raises(ContainerNotFoundError):
            await env.runtime.state(cfg.id)

    run(scenario())
    assert_no_trace(env, cfg)


def test_bad_rootfs(env: Env, tmp_path: Path) -> None:
    missing = env.config("norootfs", ["true"], rootfs=tmp_path / "missing")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    empty = env.config("emptyrootfs", ["/bin/sh"], rootfs=empty_dir)

    async def scenario() -> None:
        with pytest.raises(ContainerRuntimeError, match=r"root filesystem .* not a directory"):
            await env.runtime.create(missing, log_path=env.log(missing))
        with pytest.raises(ContainerRuntimeError, match="no such file or directory"):
            await env.runtime.create(empty, log_path=env.log(empty))

    run(scenario())
    assert_no_trace(env, missing)
    assert_no_trace(env, empty)


def test_missing_runc_says_how_to_install_it(env: Env, tmp_path: Path) -> None:
    runtime = Runtime(tmp_path / "other", runc="no-such-runc")
    cfg = env.config("norunc", ["true"])
    with pytest.raises(ContainerRuntimeError, match="apt-get install runc"):
        run(runtime.create(cfg, log_path=env.log(cfg)))


def test_create_twice_is_refused(env: Env) -> None:
    cfg = env.config("twice", ["sleep", "1000"])

    async def scenario() -> None:
        await env.runtime.create(cfg, log_path=env.log(cfg))
        with pytest.raises(ContainerRuntimeError, match="already exists"):
            await env.runtime.create(cfg, log_path=env.log(cfg))
        assert (await env.runtime.state(cfg.id)).status == "created"

    run(scenario())


def test_delete_leaves_nothing_and_is_idempotent(env: Env) -> None:
    cfg = env.config("gone", ["sleep", "1000"])

    async def scenario() -> int:
        await env.runtime.create(cfg, log_path=env.log(cfg))
        await env.runtime.start(cfg.id)
        state = await env.runtime.state(cfg.id)
        conmon = int((state.bundle / "conmon.pid").read_text())
        assert any(Path(d).is_dir() for d in glob.glob(f"/sys/fs/cgroup/*{cfg.cgroup}"))
        await env.runtime.delete(cfg.id)
        await env.runtime.delete(cfg.id)
        return conmon

    conmon = run(scenario())
    assert_no_trace(env, cfg)
    assert not _alive(conmon)
    with pytest.raises(ContainerNotFoundError):
        run(env.runtime.state(cfg.id))


def assert_no_trace(env: Env, cfg: ContainerConfig) -> None:
    runtime = env.runtime
    assert not (runtime.runc_root / cfg.id).exists(), "runc state left"
    assert not (runtime.bundles / cfg.id).exists(), "bundle left"
    assert not (runtime.exits / cfg.id).exists(), "exit file left"
    assert not (runtime.sockets / cfg.id).is_symlink(), "attach socket link left"
    assert glob.glob(f"/sys/fs/cgroup/*{cfg.cgroup}") == [], "cgroup left"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# --- what the container sees ----------------------------------------------------------


def test_user_hostname_readonly_rootfs_and_capabilities(env: Env) -> None:
    script = (
        "id; hostname; touch /written 2>/dev/null && echo rootfs-writable || echo rootfs-readonly;"
        " grep CapEff /proc/self/status"
    )
    cfg = env.config("identity", ["sh", "-c", script], uid=1000, gid=1000,
                     additional_gids=[2000], hostname="web-0", readonly_rootfs=True)
    lines = run(env.output(cfg))
    assert lines[0] == "uid=1000(app) gid=1000(app) groups=2000(extra)"  # exactly those given
    assert lines[1:3] == ["web-0", "rootfs-readonly"]
    assert lines[3].split() == ["CapEff:", "0000000000000000"]  # non-root: none effective

    root_cfg = env.config("root-caps", ["grep", "CapEff", "/proc/self/status"],
                          cap_drop=["ALL"], cap_add=["NET_ADMIN"])
    [line] = run(env.output(root_cfg))
    assert int(line.split()[1], 16) == 1 << 12  # CAP_NET_ADMIN alone


def test_privileged_gets_every_capability_and_no_masks(env: Env) -> None:
    script = "grep CapEff /proc/self/status; wc -c < /proc/timer_list"
    cfg = env.config("priv", ["sh", "-c", script], privileged=True)
    caps, size = run(env.output(cfg))
    assert int(caps.split()[1], 16) == _bounding_set()  # all that kubling itself holds
    assert int(size) > 0


def _bounding_set() -> int:
    [line] = [x for x in Path("/proc/self/status").read_text().splitlines() if "CapBnd" in x]
    return int(line.split()[1], 16)


def test_masked_paths_and_seccomp(env: Env) -> None:
    # A user namespace needs no capability, so only the seccomp filter stops unshare -U.
    script = (
        "wc -c < /proc/timer_list; ls /sys/firmware | wc -l; grep Seccomp: /proc/self/status;"
        " unshare -U -r true 2>/dev/null && echo unshare-allowed || echo unshare-refused"
    )
    plain = env.config("plain", ["sh", "-c", script])
    confined = env.config("confined", ["sh", "-c", script], seccomp=RUNTIME_DEFAULT)
    # masked: /proc/timer_list under /dev/null, /sys/firmware under an empty tmpfs
    assert run(env.output(plain)) == ["0", "0", "Seccomp:\t0", "unshare-allowed"]
    assert run(env.output(confined))[2:] == ["Seccomp:\t2", "unshare-refused"]


def test_mounts(env: Env, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in").write_text("from the host\n")
    script = (
        "cat /ro/in; echo written > /rw/out; touch /ro/x 2>/dev/null || echo ro-refused;"
        " echo tmp > /scratch/t && grep -c ' /scratch tmpfs' /proc/mounts"
    )
    cfg = env.config("mounts", ["sh", "-c", script], mounts=[
        Mount.bind(shared, "/ro", readonly=True),
        Mount.bind(shared, "/rw"),
        Mount.tmpfs("/scratch", size=1 << 20),
    ])
    assert run(env.output(cfg)) == ["from the host", "ro-refused", "1"]
    assert (shared / "out").read_text() == "written\n"


def test_terminal(env: Env) -> None:
    cfg = env.config("tty", ["tty"], terminal=True)
    lines = run(env.output(cfg))
    assert lines == ["/dev/pts/0"]


def test_stdin_through_the_attach_socket(env: Env) -> None:
    cfg = env.config("stdin", ["sh", "-c", "read line; echo got $line"])

    async def scenario() -> int:
        await env.runtime.create(cfg, log_path=env.log(cfg), stdin=True)
        await env.runtime.start(cfg.id)
        # conmon's attach socket, reached through a directory fd: the full path may be
        # longer than a socket address can hold.
        directory = os.open(env.runtime.sockets / cfg.id, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as attach:
                attach.connect(f"/proc/self/fd/{directory}/attach")
                attach.send(b"hello\n")
                return await env.runtime.wait(cfg.id, 5)
        finally:
            os.close(directory)

    assert run(scenario()) == 0
    assert parse(env.log(cfg).read_text().splitlines()[0])["text"] == "got hello"


def test_a_bundle_without_runc_state_is_listed_and_deleted(env: Env) -> None:
    # What a create interrupted by a crash of the agent leaves.
    (env.runtime.bundles / "kubling-test-half").mkdir(parents=True)

    async def scenario() -> None:
        [state] = await env.runtime.list()
        assert (state.id, state.status, state.exit_code) == ("kubling-test-half", "unknown", None)
        await env.runtime.delete("kubling-test-half")
        assert await env.runtime.list() == []

    run(scenario())


def test_joins_a_network_namespace(env: Env) -> None:
    netns = f"kubling-test-{env.tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        # A veth pair inside the namespace tells it apart from a fresh one (only lo).
        subprocess.run(["ip", "-n", netns, "link", "add", "kt0", "type", "veth", "peer",
                        "name", "kt1"], check=True)
        script = "grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort"
        joined = env.config("joined", ["sh", "-c", script],
                            namespaces=Namespaces(network=f"/run/netns/{netns}"))
        fresh = env.config("fresh", ["sh", "-c", script])
        assert run(env.output(joined)) == ["kt0", "kt1", "lo"]
        assert run(env.output(fresh)) == ["lo"]
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    assert not Path(f"/run/netns/{netns}").exists()


# --- state without running runc -----------------------------------------------------------


def _runc_says(env: Env, cid: str) -> dict[str, object]:
    out = subprocess.run(["runc", "--root", str(env.runtime.runc_root), "state", cid],
                         capture_output=True, text=True, check=True).stdout
    state = json.loads(out)
    return {k: state[k] for k in ("id", "pid", "status", "created")}


def test_state_read_from_runcs_files_matches_runc_state(env: Env) -> None:
    """``runcstate`` answers as ``runc state`` does in each status, and a state.json it
    cannot read makes the runtime ask runc itself."""
    from kubling.node.runtime import runcstate

    cfg = env.config("state-file", ["sh", "-c", "read line"])

    async def scenario() -> None:
        await env.runtime.create(cfg, log_path=env.log(cfg), stdin=True)
        assert runcstate.read_state(env.runtime.runc_root, cfg.id) == _runc_says(env, cfg.id)
        assert (await env.runtime.state(cfg.id)).status == "created"
        await env.runtime.start(cfg.id)
        running = runcstate.read_state(env.runtime.runc_root, cfg.id)
        assert running == _runc_says(env, cfg.id) and running is not None
        assert running["status"] == "running" and running["pid"] > 0
        await env.runtime.kill(cfg.id, signal.SIGKILL)
        await env.runtime.wait(cfg.id, timeout=5)
        stopped = runcstate.read_state(env.runtime.runc_root, cfg.id)
        assert stopped is not None and stopped["status"] == "stopped"
        assert _runc_says(env, cfg.id)["status"] == "stopped"
        state_file = env.runtime.runc_root / cfg.id / "state.json"
        original = state_file.read_bytes()
        state_file.write_text("{not json")
        with pytest.raises(runcstate.StateFormatError):
            runcstate.read_state(env.runtime.runc_root, cfg.id)
        state_file.write_bytes(original)
        assert (await env.runtime.state(cfg.id)).status == "stopped"
        assert runcstate.read_state(env.runtime.runc_root, "no-such-container") is None

    run(scenario())

"""What the node agent wants a container to be, and the OCI runtime spec (config.json) that
tells runc so.

`ContainerConfig` is the agent's vocabulary (a pod's container after defaulting: user,
mounts, namespaces to join, resources, capabilities); `oci_spec` turns it into an OCI runtime
spec 1.0.2 document with the defaults users of Docker and containerd expect:

- mounts: /proc, a tmpfs /dev, /dev/pts, /dev/shm, /dev/mqueue, a read-only /sys and
  /sys/fs/cgroup (the caller's mounts come after them and replace one at the same path);
- capabilities: containerd's default 14, then `cap_add`, then `cap_drop` ("ALL" allowed in
  both, the drop list wins, as in containerd's CRI plugin);
- masked and read-only /proc and /sys paths as containerd's defaults;
- the device cgroup denies everything but runc's own default devices (null, zero, full,
  random, urandom, tty, pts);
- `privileged`: every capability kubling holds, no masked or read-only paths, a writable
  /sys, every device of the host, no seccomp filter.

The module does no I/O beyond reading the host's /dev and our own capability set for privileged
containers, and checking whether the memory cgroup accounts swap.
"""

from __future__ import annotations

import os
import platform
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubling.node.runtime.seccomp import runtime_default_profile

__all__ = [
    "ALL_CAPABILITIES",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_PATH",
    "DEFAULT_READONLY_PATHS",
    "HOST",
    "RUNTIME_DEFAULT",
    "ContainerConfig",
    "Device",
    "Mount",
    "Namespaces",
    "Resources",
    "SpecError",
    "capabilities",
    "held_capabilities",
    "host_devices",
    "oci_spec",
]

OCI_VERSION = "1.0.2"

#: A namespace value meaning "the runtime's own": no namespace entry at all, so the container
#: shares the host's (hostNetwork, hostPID, hostIPC).
HOST = "host"

#: `ContainerConfig.seccomp` value selecting kubling's default filter (see `seccomp.py`).
RUNTIME_DEFAULT: Literal["RuntimeDefault"] = "RuntimeDefault"

#: PATH given to a container whose environment has none, as containerd does: without it runc
#: cannot find a bare command name such as `sh`.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Docker's and containerd's default capability set.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

#: Every capability of Linux 5.9+, in kernel order (capability.h numbers 0 to 40).
ALL_CAPABILITIES: tuple[str, ...] = tuple(
    "CAP_" + name
    for name in (
        "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
        "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
        "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
        "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
        "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
        "CHECKPOINT_RESTORE"
    ).split()
)

#: containerd's (and Kubernetes' DefaultProcMount) masked paths: hidden under /dev/null or an
#: empty read-only tmpfs because they leak host information or poke the hardware.
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

#: containerd's read-only paths: kernel knobs a container may read but not turn.
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# runc's container id rule (libcontainer's idRegex); we also keep ids short enough for paths.
_ID = re.compile(r"^[\w+\-.]{1,128}$")
_CGROUP_PREFIX = "kubling"
_DEV_SKIP = frozenset({"pts", "shm", "mqueue", "fd", "ptmx", "console", "core"})

SeccompProfile = Literal["RuntimeDefault"] | dict[str, Any]


class SpecError(ValueError):
    """A `ContainerConfig` that cannot become a valid spec; the message names the field."""


@dataclass(frozen=True)
class Mount:
    """One mount in the container: `options` are mount(8) words plus runc's "bind"/"rbind",
    propagation ("rprivate", ...) and "ro"/"rw"."""

    destination: str
    source: str
    type: str = "bind"
    options: tuple[str, ...] = ()

    @classmethod
    def bind(cls, source: str | Path, destination: str, *, readonly: bool = False) -> Mount:
        """A recursive bind mount, private (as the kubelet asks by default), ro or rw."""
        mode = "ro" if readonly else "rw"
        return cls(destination, str(source), "bind", ("rbind", "rprivate", mode))

    @classmethod
    def tmpfs(cls, destination: str, *, size: int | None = None, mode: str = "1777") -> Mount:
        """A fresh tmpfs (emptyDir with medium Memory); `size` in bytes, unlimited if None."""
        options = ["nosuid", "nodev", f"mode={mode}"]
        if size is not None:
            options.append(f"size={size}")
        return cls(destination, "tmpfs", "tmpfs", tuple(options))

    def to_oci(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


@dataclass(frozen=True)
class Namespaces:
    """Per namespace: None makes a new one, a path (/proc/<pid>/ns/net, /run/netns/kubling-…)
    joins it, `HOST` stays in the runtime's own. Mount namespaces are always new."""

    network: str | None = None
    ipc: str | None = None
    uts: str | None = None
    pid: str | None = None


@dataclass(frozen=True)
class Resources:
    """cgroup limits in the units of the kernel files: shares (2-262144), quota and period in
    microseconds, bytes, a count of tasks. None leaves a limit unset."""

    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    memory_limit: int | None = None
    #: memory+swap limit; None means "equal to memory_limit" (no swap) where swap is accounted.
    memory_swap: int | None = None
    pids_limit: int | None = None


@dataclass(frozen=True)
class Device:
    """A device node to create in the container (and allow in the device cgroup)."""

    path: str
    type: Literal["c", "b", "u", "p"]
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass
class ContainerConfig:
    """Everything the agent decides about one container. `rootfs` is already mounted (or is a
    plain directory); nothing here is created by `oci_spec`."""

    id: str
    rootfs: Path | str
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    hostname: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    namespaces: Namespaces = field(default_factory=Namespaces)
    #: cgroupfs path below each hierarchy's root; must start with /kubling. None: /kubling/<id>.
    cgroups_path: str | None = None
    resources: Resources = field(default_factory=Resources)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    no_new_privileges: bool = False
    readonly_rootfs: bool = False
    terminal: bool = False
    sysctls: dict[str, str] = field(default_factory=dict)
    oom_score_adj: int | None = None
    #: None: unconfined; RUNTIME_DEFAULT; or a complete OCI `linux.seccomp` object.
    seccomp: SeccompProfile | None = None
    #: None: the defaults above; [] unmasks everything (procMount: Unmasked).
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    devices: list[Device] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def cgroup(self) -> str:
        """The cgroup path the container lands in."""
        return self.cgroups_path or f"/{_CGROUP_PREFIX}/{self.id}"


def oci_spec(cfg: ContainerConfig) -> dict[str, Any]:
    """The OCI runtime spec (config.json content) for `cfg`; raises SpecError if invalid."""
    _validate(cfg)
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(cfg),
        "root": {"path": os.fspath(cfg.rootfs), "readonly": cfg.readonly_rootfs},
        "mounts": _mounts(cfg),
        "linux": _linux(cfg),
    }
    if cfg.hostname and cfg.namespaces.uts is None:
        # runc refuses a hostname without a private UTS namespace; a joined one has its own.
        spec["hostname"] = cfg.hostname
    if cfg.annotations:
        spec["annotations"] = dict(cfg.annotations)
    return spec


def capabilities(add: list[str], drop: list[str], *, privileged: bool = False) -> list[str]:
    """The capability set: the defaults, plus `add`, minus `drop` ("ALL" in either; names
    with or without CAP_, any case). Drop wins, as in containerd."""
    if privileged:
        return held_capabilities()
    adds = [_cap_name(name) for name in add]
    drops = [_cap_name(name) for name in drop]
    caps = list(ALL_CAPABILITIES) if "CAP_ALL" in adds else list(DEFAULT_CAPABILITIES)
    if "CAP_ALL" in drops:
        caps = []
    for cap in adds:
        if cap != "CAP_ALL" and cap not in caps:
            caps.append(cap)
    return [cap for cap in caps if cap not in drops]


def held_capabilities(status: Path = Path("/proc/self/status")) -> list[str]:
    """The capabilities in this process's bounding set: what a privileged container gets, as
    with containerd (a runtime cannot grant more than it holds, and sandboxes that run
    kubling often hold fewer than all)."""
    for line in status.read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return [cap for bit, cap in enumerate(ALL_CAPABILITIES) if mask >> bit & 1]
    return list(ALL_CAPABILITIES)


def host_devices(root: Path = Path("/dev")) -> list[Device]:
    """Every character and block device below `root`, as a privileged container gets them
    (pseudo-terminal and shm directories left out: the container has its own)."""
    found: list[Device] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _DEV_SKIP]
        for name in filenames:
            if name in _DEV_SKIP:
                continue
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue  # gone while we walked
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                kind: Literal["c", "b"] = "c" if stat.S_ISCHR(info.st_mode) else "b"
                found.append(
                    Device(
                        path="/dev/" + os.path.relpath(path, root),
                        type=kind,
                        major=os.major(info.st_rdev),
                        minor=os.minor(info.st_rdev),
                        file_mode=stat.S_IMODE(info.st_mode),
                        uid=info.st_uid,
                        gid=info.st_gid,
                    )
                )
    return found


def _validate(cfg: ContainerConfig) -> None:
    if not _ID.match(cfg.id):
        raise SpecError(f"container id {cfg.id!r} must be 1-128 of letters, digits, _ + - .")
    if not cfg.args:
        raise SpecError(f"container {cfg.id}: args is empty: there is no command to run")
    if not cfg.cwd.startswith("/"):
        raise SpecError(f"container {cfg.id}: cwd {cfg.cwd!r} must be an absolute path")
    for mount in cfg.mounts:
        if not mount.destination.startswith("/"):
            raise SpecError(f"container {cfg.id}: mount destination {mount.destination!r} "
                            "must be an absolute path")
    for kind in ("network", "ipc", "uts", "pid"):
        value = getattr(cfg.namespaces, kind)
        if value not in (None, HOST) and not str(value).startswith("/"):
            raise SpecError(f"container {cfg.id}: {kind} namespace {value!r} must be None, "
                            f"{HOST!r} or an absolute path such as /proc/<pid>/ns/net")
    parts = cfg.cgroup.split("/")
    if not cfg.cgroup.startswith("/") or not parts[1].startswith(_CGROUP_PREFIX) or ".." in parts:
        raise SpecError(f"container {cfg.id}: cgroups_path {cfg.cgroup!r} must be absolute and "
                        f"start with /{_CGROUP_PREFIX} so that cleanup can find it")


def _cap_name(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _process(cfg: ContainerConfig) -> dict[str, Any]:
    caps = capabilities(cfg.cap_add, cfg.cap_drop, privileged=cfg.privileged)
    env = list(cfg.env)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, "PATH=" + DEFAULT_PATH)
    process: dict[str, Any] = {
        "terminal": cfg.terminal,
        "user": {"uid": cfg.uid, "gid": cfg.gid},
        "args": list(cfg.args),
        "env": env,
        "cwd": cfg.cwd,
        # No inheritable or ambient set: a non-root user gets no capabilities after execve,
        # as with Docker (and CVE-2022-24769 is why inheritable stays empty).
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": cfg.no_new_privileges,
    }
    if cfg.additional_gids:
        process["user"]["additionalGids"] = list(cfg.additional_gids)
    if cfg.oom_score_adj is not None:
        process["oomScoreAdj"] = cfg.oom_score_adj
    return process


def _default_mounts(privileged: bool) -> list[Mount]:
    sys_mode = "rw" if privileged else "ro"
    return [
        Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount("/dev/pts", "devpts", "devpts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
        Mount("/dev/shm", "shm", "tmpfs",
              ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
        Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", sys_mode)),
        Mount("/sys/fs/cgroup", "cgroup", "cgroup",
              ("nosuid", "noexec", "nodev", "relatime", sys_mode)),
    ]


def _mounts(cfg: ContainerConfig) -> list[dict[str, Any]]:
    """Defaults first, then the caller's, parents before children (a mount made over a later
    parent would be hidden by it); a caller's mount replaces a default at the same path."""
    wanted = {_normal(mount.destination) for mount in cfg.mounts}
    defaults = [m for m in _default_mounts(cfg.privileged) if m.destination not in wanted]
    ordered = sorted(cfg.mounts, key=lambda m: _normal(m.destination).count("/"))
    return [mount.to_oci() for mount in [*defaults, *ordered]]


def _normal(path: str) -> str:
    return os.path.normpath(path)


def _linux(cfg: ContainerConfig) -> dict[str, Any]:
    linux: dict[str, Any] = {
        "namespaces": _namespaces(cfg.namespaces),
        "cgroupsPath": cfg.cgroup,
        "resources": _resources(cfg),
    }
    if cfg.privileged:
        masked: list[str] = []
        readonly: list[str] = []
    else:
        masked = list(DEFAULT_MASKED_PATHS if cfg.masked_paths is None else cfg.masked_paths)
        readonly = list(
            DEFAULT_READONLY_PATHS if cfg.readonly_paths is None else cfg.readonly_paths
        )
    if masked:
        linux["maskedPaths"] = masked
    if readonly:
        linux["readonlyPaths"] = readonly
    devices = [*cfg.devices, *(host_devices() if cfg.privileged else [])]
    if devices:
        linux["devices"] = _devices(devices)
    if cfg.sysctls:
        linux["sysctl"] = dict(cfg.sysctls)
    if cfg.seccomp is not None and not cfg.privileged:
        linux["seccomp"] = (
            runtime_default_profile(platform.machine(), capabilities(cfg.cap_add, cfg.cap_drop))
            if cfg.seccomp == RUNTIME_DEFAULT
            else cfg.seccomp
        )
    return linux


def _namespaces(ns: Namespaces) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = [{"type": "mount"}]
    for kind, value in (("network", ns.network), ("ipc", ns.ipc), ("uts", ns.uts), ("pid", ns.pid)):
        if value == HOST:
            continue
        entries.append({"type": kind} if value is None else {"type": kind, "path": value})
    return entries


def _devices(devices: list[Device]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for dev in devices:
        seen[dev.path] = {
            "path": dev.path,
            "type": dev.type,
            "major": dev.major,
            "minor": dev.minor,
            "fileMode": dev.file_mode,
            "uid": dev.uid,
            "gid": dev.gid,
        }
    return list(seen.values())


def _resources(cfg: ContainerConfig) -> dict[str, Any]:
    res = cfg.resources
    # Deny every device first; runc then allows its defaults (null, zero, full, random,
    # urandom, tty, pts) and each device listed in linux.devices.
    allowed = [{"allow": True, "access": "rwm"}] if cfg.privileged else [
        *({"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": "rwm"}
          for d in cfg.devices),
    ]
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}, *allowed]}
    cpu = {
        key: value
        for key, value in (("shares", res.cpu_shares), ("quota", res.cpu_quota),
                           ("period", res.cpu_period))
        if value is not None
    }
    if cpu:
        out["cpu"] = cpu
    if res.memory_limit is not None:
        memory: dict[str, int] = {"limit": res.memory_limit}
        if res.memory_swap is not None:
            memory["swap"] = res.memory_swap
        elif _swap_accounted():
            memory["swap"] = res.memory_limit  # no swap beyond the limit, as the kubelet asks
        out["memory"] = memory
    if res.pids_limit is not None:
        out["pids"] = {"limit": res.pids_limit}
    return out


def _swap_accounted() -> bool:
    """Whether memory+swap can be limited: cgroup v1 with swap accounting, or v2 (runc turns
    a v1-style swap figure into memory.swap.max there)."""
    v1 = Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    return v1.exists() or v2.exists()

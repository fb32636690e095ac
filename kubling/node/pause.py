"""The init process of a pod that shares one PID namespace (``shareProcessNamespace: true``).

Under containerd that namespace belongs to the pause container: its PID 1 is ``/pause``,
which reaps the orphans the kernel hands it, and every container of the pod joins it, so
``ps`` in one shows the others and none of them is PID 1. kubling has no pause image and
makes this container only for such pods: a runc container (under conmon, like the pod's
others, so it outlives an agent restart and is adopted by its id) whose read-only root is a
directory holding the host's static busybox (package busybox-static) and a ``/pause``
script. The script is a shell loop waiting on a long sleep: busybox ash's ``wait`` reaps
*any* child (``waitpid(-1)``), orphans included, and a TERM trap lets it stop at once (the
PID 1 of a namespace ignores signals it does not handle).

Its runtime id is ``<pod uid>_POD_0``: ``POD`` is not a DNS label, so no container of the
spec can have it (dockershim named its infra container the same way). It joins the pod's
network, IPC and UTS namespaces, runs with no capability, and is never in the pod's status.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from kubling.node.containers import ContainerId
from kubling.node.runtime import (
    HOST,
    ContainerConfig,
    ContainerRuntimeError,
    Namespaces,
    Resources,
    Runtime,
    SpecError,
)
from kubling.node.sandbox import Sandbox

NAME = "POD"
BUSYBOX = Path("/bin/busybox")
#: The init: reap every child, stop on TERM. Visible as ``/bin/sh /pause`` in ``ps``.
SCRIPT = """#!/bin/sh
# kubling's pause: PID 1 of a pod that shares its process namespace; reaps orphans.
trap 'exit 0' TERM INT
while :; do sleep 2147483647 & wait; done
"""


class PauseError(Exception):
    """The init could not be started (the sandbox's FailedCreatePodSandBox)."""


def wanted(spec: dict[str, object]) -> bool:
    """A pod sharing one PID namespace of its own (hostPID uses the node's)."""
    return bool(spec.get("shareProcessNamespace")) and not spec.get("hostPID")


def alive(sandbox: Sandbox) -> bool:
    """Whether the pod's init behind ``sandbox.pid_ns`` (``/proc/<pid>/ns/pid``) still runs:
    that PID must still be in the init's cgroup, so a PID the kernel gave to another process
    after the init died is not taken for it (joining that PID namespace would put the pod's
    containers in someone else's, often the node's)."""
    if sandbox.pid_ns is None:
        return False
    parts = sandbox.pid_ns.split("/")
    if len(parts) < 3 or not parts[2].isdigit():
        return False
    try:
        memberships = Path(f"/proc/{parts[2]}/cgroup").read_text()
    except OSError:
        return False
    return f"{sandbox.cgroup}/{NAME}\n" in memberships


def container_id(uid: str) -> str:
    return str(ContainerId(uid, NAME, 0))


def is_pause(runtime_id: str) -> bool:
    parsed = ContainerId.parse(runtime_id)
    return parsed is not None and parsed.name == NAME


def root_dir(data_dir: Path) -> Path:
    return data_dir / "pause" / "rootfs"


def prepare_root(data_dir: Path) -> Path:
    """The shared read-only root (made once per data dir; atomic, so racing workers and a
    crash half-way leave either nothing or the whole of it)."""
    root = root_dir(data_dir)
    if (root / "pause").is_file():
        return root
    if not BUSYBOX.is_file():
        raise PauseError(f"{BUSYBOX} is missing: install busybox-static")
    staging = root.parent / f".rootfs-{os.getpid()}-{id(root)}"
    shutil.rmtree(staging, ignore_errors=True)
    for sub in ("bin", "proc", "sys", "dev", "etc", "tmp"):
        (staging / sub).mkdir(parents=True)
    shutil.copy2(BUSYBOX, staging / "bin" / "busybox")
    for applet in ("sh", "sleep"):
        (staging / "bin" / applet).symlink_to("busybox")
    (staging / "pause").write_text(SCRIPT)
    (staging / "pause").chmod(0o755)
    try:
        staging.rename(root)
    except OSError:  # another worker won the race
        shutil.rmtree(staging, ignore_errors=True)
    return root


def config(sandbox: Sandbox, root: Path) -> ContainerConfig:
    """The init container: in the pod's namespaces, a new PID namespace, no capabilities."""
    return ContainerConfig(
        id=container_id(sandbox.uid),
        rootfs=root,
        args=["/pause"],
        env=["PATH=/bin"],
        namespaces=Namespaces(
            network=HOST if sandbox.netns_path is None else str(sandbox.netns_path),
            ipc=HOST if sandbox.ipc_path is None else str(sandbox.ipc_path),
            uts=HOST if sandbox.uts_path is None else str(sandbox.uts_path)),
        cgroups_path=f"{sandbox.cgroup}/{NAME}",
        resources=Resources(cpu_shares=2),
        cap_drop=["ALL"],
        no_new_privileges=True,
        readonly_rootfs=True,
        annotations={"io.kubernetes.pod.uid": sandbox.uid,
                     "io.kubernetes.container.name": NAME},
    )


async def ensure(runtime: Runtime, sandbox: Sandbox, data_dir: Path) -> str:
    """The pod's PID namespace (``/proc/<init pid>/ns/pid``): the running init found again
    (agent restart), else a new one started. Raises PauseError."""
    cid = container_id(sandbox.uid)
    with contextlib.suppress(ContainerRuntimeError):
        state = await runtime.state(cid)
        if state.status == "running" and state.pid > 0:
            return f"/proc/{state.pid}/ns/pid"
    await runtime.delete(cid)
    try:
        root = prepare_root(data_dir)
        await runtime.create(config(sandbox, root), log_path=sandbox.directory / "pause.log")
        await runtime.start(cid)
        state = await runtime.state(cid)
    except (ContainerRuntimeError, SpecError, OSError) as err:
        await runtime.delete(cid)
        raise PauseError(f"cannot start the pod's init process: {err}") from err
    if state.status != "running" or state.pid <= 0:
        await runtime.delete(cid)
        raise PauseError(f"the pod's init process is {state.status}")
    return f"/proc/{state.pid}/ns/pid"


async def remove(runtime: Runtime, uid: str) -> None:
    """Stop and delete the pod's init (its containers must be stopped first: the kernel
    kills every process of a PID namespace whose init exits). Idempotent."""
    cid = container_id(uid)
    with contextlib.suppress(ContainerRuntimeError, TimeoutError):
        await runtime.stop(cid, 2.0)
    await runtime.delete(cid)

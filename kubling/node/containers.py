"""One container of a pod, from its spec to a running runc container.

``container_config`` is pure: it turns the pod's container (after API defaulting), its
image's config and the sandbox into the runtime's ``ContainerConfig`` with upstream's rules
for command and args (``command`` replaces the image's Entrypoint, ``args`` its Cmd, both
``$(VAR)``-expanded), the environment (the image's, then the container's as ``envvars``
resolved it), the user, the working directory, the sandbox's ``/etc/hosts``,
``/etc/hostname`` and ``/etc/resolv.conf``, the volume mounts (the volumes themselves
are set up by ``kubling.node.volumes`` before any container starts) and the namespaces it
joins: the sandbox's network, IPC and UTS ones (the hostname lives in the latter), the
host's for hostNetwork/hostIPC/hostPID, the pod's init's PID namespace with
``shareProcessNamespace``.

``ContainerPaths`` is the on-disk layout below the pod directory:

    containers/<name>/image-id              the image in use (``images_in_use`` protects it)
    containers/<name>/<attempt>/            the overlay root filesystem of one attempt
    logs/<name>/<attempt>.log               what conmon wrote for that attempt (CRI format)
    volumes/kubernetes.io~<kind>/<volume>/  a volume (``kubling.node.volumes``)

A runtime container id is ``<pod uid>_<container name>_<attempt>``: container names are DNS
labels (no ``_``), so an agent that restarts reads the pod, the container and its restart
count back from ``Runtime.list()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path

from kubling.api.meta import Object
from kubling.api.validation import _quantity
from kubling.node import envvars, securitycontext, termination
from kubling.node.images.manifest import ImageConfig
from kubling.node.runtime import HOST, ContainerConfig, Mount, Namespaces, Resources
from kubling.node.sandbox import Sandbox
from kubling.node.volumes import Mounted

_UID_LENGTH = 36


class ContainerSpecError(Exception):
    """The pod's container cannot become a runtime container (CreateContainerConfigError)."""


@dataclasses.dataclass(frozen=True)
class ContainerId:
    uid: str
    name: str
    attempt: int

    def __str__(self) -> str:
        return f"{self.uid}_{self.name}_{self.attempt}"

    @classmethod
    def parse(cls, text: str) -> ContainerId | None:
        parts = text.split("_")
        if len(parts) != 3 or len(parts[0]) != _UID_LENGTH or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]))


@dataclasses.dataclass(frozen=True)
class ContainerPaths:
    pod_dir: Path
    name: str

    @property
    def directory(self) -> Path:
        return self.pod_dir / "containers" / self.name

    @property
    def image_id_marker(self) -> Path:
        return self.directory / "image-id"

    def attempt_dir(self, attempt: int) -> Path:
        return self.directory / str(attempt)

    def log_path(self, attempt: int) -> Path:
        return self.pod_dir / "logs" / self.name / f"{attempt}.log"


def container_config(*, pod: Object, container: Object, image: ImageConfig, sandbox: Sandbox,
                     container_id: ContainerId, rootfs: Path, env: Mapping[str, str],
                     volumes: Mapping[str, Mounted]) -> ContainerConfig:
    """The runtime's view of one container, given its resolved environment (``envvars``)
    and the pod's volumes as set up; raises ContainerSpecError."""
    spec = pod.get("spec") or {}
    args = [envvars.expand(a, env) for a in command_line(container, image)]
    if not args:
        raise ContainerSpecError("no command specified")
    uid, gid = user_of(pod, container, image, rootfs)
    try:
        securitycontext.verify_run_as_non_root(pod, container, uid, image.user)
        seccomp = securitycontext.seccomp(pod, container, seccomp_root(sandbox))
    except securitycontext.SecurityContextError as err:
        raise ContainerSpecError(str(err)) from None
    context = container.get("securityContext") or {}
    capabilities = context.get("capabilities") or {}
    return ContainerConfig(
        id=str(container_id),
        rootfs=rootfs,
        args=args,
        env=environment(image, env),
        cwd=container.get("workingDir") or image.working_dir or "/",
        uid=uid,
        gid=gid,
        additional_gids=supplemental_groups(pod),
        hostname=None if spec.get("hostNetwork") else _hostname(sandbox),
        mounts=[*mounts(pod, container, sandbox, volumes, env),
                *termination_mount(container, sandbox, container_id)],
        namespaces=namespaces(spec, sandbox),
        cgroups_path=f"{sandbox.cgroup}/{container['name']}",
        resources=resources(container),
        cap_add=list(capabilities.get("add") or []),
        cap_drop=list(capabilities.get("drop") or []),
        privileged=bool(context.get("privileged")),
        readonly_rootfs=bool(context.get("readOnlyRootFilesystem")),
        terminal=bool(container.get("tty")),
        no_new_privileges=securitycontext.no_new_privileges(container),
        seccomp=seccomp,
        sysctls=securitycontext.sysctls(pod),
        annotations={"io.kubernetes.pod.uid": sandbox.uid,
                     "io.kubernetes.pod.name": pod["metadata"]["name"],
                     "io.kubernetes.pod.namespace": pod["metadata"].get("namespace", ""),
                     "io.kubernetes.container.name": container["name"]},
    )


def namespaces(spec: Object, sandbox: Sandbox) -> Namespaces:
    """The sandbox's network, IPC and UTS namespaces, joined by every container of the pod
    (the host's for hostNetwork — UTS too — and hostIPC), and its PID namespace: the
    host's for hostPID, the pod's init's for shareProcessNamespace, else a new one."""
    def joined(target: Path | str | None) -> str:
        return HOST if target is None else str(target)

    return Namespaces(network=joined(sandbox.netns_path), ipc=joined(sandbox.ipc_path),
                      uts=joined(sandbox.uts_path),
                      pid=HOST if spec.get("hostPID") else sandbox.pid_ns)


def seccomp_root(sandbox: Sandbox) -> Path:
    """Where ``Localhost`` seccomp profiles live: ``<data-dir>/seccomp`` (the kubelet's
    ``/var/lib/kubelet/seccomp``), beside the ``<data-dir>/pods`` holding the sandbox."""
    return sandbox.directory.parent.parent / "seccomp"


def termination_mount(container: Object, sandbox: Sandbox,
                      container_id: ContainerId) -> list[Mount]:
    """The attempt's termination-message file at ``terminationMessagePath`` (the kubelet
    mounts one into every container that has a path)."""
    target = container.get("terminationMessagePath")
    if not target:
        return []
    directory = ContainerPaths(sandbox.directory, container["name"]).directory
    return [Mount.bind(termination.message_path(directory, container_id.attempt), target)]


def command_line(container: Object, image: ImageConfig) -> list[str]:
    """Upstream's rule: ``command`` replaces Entrypoint (and drops Cmd), ``args`` replace
    Cmd; either may be absent."""
    command = container.get("command")
    args = container.get("args")
    if command:
        return [*command, *(args or [])]
    return [*image.entrypoint, *(args if args else image.cmd)]


def environment(image: ImageConfig, env: Mapping[str, str]) -> list[str]:
    """The image's environment overridden by the container's (as the runtime merges them:
    a variable keeps its place, a new one is appended)."""
    merged: dict[str, str] = {}
    for item in image.env:
        name, _, value = item.partition("=")
        merged[name] = value
    merged.update(env)
    return [f"{k}={v}" for k, v in merged.items()]


def user_of(pod: Object, container: Object, image: ImageConfig, rootfs: Path) -> tuple[int, int]:
    """runAsUser/runAsGroup (container over pod), else the image's USER (numeric or a name
    in the image's /etc/passwd)."""
    pod_ctx = (pod.get("spec") or {}).get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    run_as_user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    run_as_group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    image_user, _, image_group = image.user.partition(":")
    uid, gid = 0, 0
    if image_user:
        uid, gid = _lookup_user(image_user, rootfs)
    if image_group.isdigit():
        gid = int(image_group)
    if run_as_user is not None:
        uid = int(run_as_user)
        if run_as_group is None and not image_group:
            gid = _passwd_gid(uid, rootfs)
    if run_as_group is not None:
        gid = int(run_as_group)
    return uid, gid


def supplemental_groups(pod: Object) -> list[int]:
    """The process's extra groups, as the kubelet gives them: ``fsGroup`` (so it can use
    the volumes made group-owned by it), then ``supplementalGroups``."""
    context = (pod.get("spec") or {}).get("securityContext") or {}
    groups = [context["fsGroup"]] if isinstance(context.get("fsGroup"), int) else []
    groups += [g for g in context.get("supplementalGroups") or [] if isinstance(g, int)]
    return list(dict.fromkeys(groups))


def _lookup_user(user: str, rootfs: Path) -> tuple[int, int]:
    for fields in _passwd(rootfs):
        if fields[0] == user or fields[2] == user:
            return int(fields[2]), int(fields[3])
    if user.isdigit():
        return int(user), 0
    raise ContainerSpecError(f'unable to find user {user}: no matching entries in passwd file')


def _passwd_gid(uid: int, rootfs: Path) -> int:
    for fields in _passwd(rootfs):
        if fields[2] == str(uid) and fields[3].isdigit():
            return int(fields[3])
    return 0


def _passwd(rootfs: Path) -> list[list[str]]:
    try:
        text = (rootfs / "etc" / "passwd").read_text(errors="replace")
    except OSError:
        return []
    rows = [line.split(":") for line in text.splitlines()]
    return [r for r in rows if len(r) >= 4 and r[2].isdigit() and r[3].isdigit()]


def _hostname(sandbox: Sandbox) -> str:
    try:
        return (sandbox.directory / "hostname").read_text().strip()
    except OSError:
        return ""


def mounts(pod: Object, container: Object, sandbox: Sandbox, volumes: Mapping[str, Mounted],
           env: Mapping[str, str]) -> list[Mount]:
    """The pod's /dev/shm and the sandbox's managed files, then the container's
    ``volumeMounts`` (so a volume at /dev/shm replaces the pod's): a bind of the
    volume's directory (or of its ``subPath`` / expanded ``subPathExpr``), read-only when the
    mount or the volume kind says so. Only the default propagation (private) exists here:
    ``mountPropagation`` is accepted and not honoured."""
    spec = pod.get("spec") or {}
    out = [Mount.bind(sandbox.shm_path or Path("/dev/shm"), "/dev/shm"),
           Mount.bind(sandbox.directory / "etc-hosts", "/etc/hosts"),
           Mount.bind(sandbox.directory / "resolv.conf", "/etc/resolv.conf")]
    if not spec.get("hostNetwork"):
        out.append(Mount.bind(sandbox.directory / "hostname", "/etc/hostname"))
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name", ""))
        if volume is None:
            raise ContainerSpecError(f'cannot find volume "{mount.get("name")}" to mount into '
                                     f'container "{container["name"]}"')
        source = volume.host_path
        sub_path = mount.get("subPath") or ""
        if mount.get("subPathExpr"):
            sub_path = envvars.expand(mount["subPathExpr"], env)
        if sub_path:
            source = _sub_path(volume, sub_path, mount["name"], container["name"])
        out.append(Mount.bind(source, mount["mountPath"],
                              readonly=bool(mount.get("readOnly")) or volume.read_only))
    return out


def _sub_path(volume: Mounted, sub_path: str, name: str, container: str) -> Path:
    """The host path a ``subPath`` mount binds: resolved through symlinks (so a configMap
    key pins its current version, as upstream) and refused when that leaves the volume; a
    missing directory is made in a writable volume."""
    failed = ContainerSpecError(f'failed to prepare subPath for volumeMount "{name}" of '
                                f'container "{container}"')
    if os.path.isabs(sub_path) or ".." in sub_path.split("/"):
        raise failed
    base = os.path.realpath(volume.host_path)
    resolved = os.path.realpath(os.path.join(base, sub_path))
    if not (resolved == base or resolved.startswith(base + "/")):
        raise failed
    if not os.path.lexists(resolved) and not volume.read_only:
        with contextlib.suppress(OSError):
            os.makedirs(resolved, mode=0o755, exist_ok=True)
    if not os.path.exists(resolved):
        raise failed
    return Path(resolved)


def resources(container: Object) -> Resources:
    """cgroup limits from resources: CPU limit → CFS quota, CPU request → shares, memory
    limit → bytes (as the kubelet converts them)."""
    res = container.get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    cpu_limit = _quantity.parse_quantity(limits.get("cpu"))
    cpu_request = _quantity.parse_quantity(requests.get("cpu", limits.get("cpu")))
    memory = _quantity.parse_quantity(limits.get("memory"))
    period = 100_000
    return Resources(
        cpu_shares=max(2, min(262144, math.ceil(cpu_request * 1024)))
        if cpu_request is not None else 2,
        cpu_quota=max(1000, math.ceil(cpu_limit * period)) if cpu_limit is not None else None,
        cpu_period=period if cpu_limit is not None else None,
        memory_limit=math.ceil(memory) if memory is not None else None,
    )


"""One container of a pod, from its spec to a running runc container.

``container_config`` is pure: it turns the pod's container (after API defaulting), its
image's config and the sandbox into the runtime's ``ContainerConfig`` with upstream's rules
for command and args (``command`` replaces the image's Entrypoint, ``args`` its Cmd), the
environment (the image's, then ``env`` with ``$(VAR)`` expansion and the downward-API
fields a pod knows about itself), the user, the working directory, the sandbox's
``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf``, and emptyDir volumes.

``ContainerPaths`` is the on-disk layout below the pod directory:

    containers/<name>/image-id        the image in use (``images_in_use`` protects it)
    containers/<name>/<attempt>/      the overlay root filesystem of one attempt
    logs/<name>/<attempt>.log         what conmon wrote for that attempt (CRI format)
    volumes/empty-dir/<volume>/       an emptyDir, shared by the pod's containers

A runtime container id is ``<pod uid>_<container name>_<attempt>``: container names are DNS
labels (no ``_``), so an agent that restarts reads the pod, the container and its restart
count back from ``Runtime.list()``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path

from kubling.api.meta import Object
from kubling.api.validation import _quantity
from kubling.node.images.manifest import ImageConfig
from kubling.node.runtime import HOST, ContainerConfig, Mount, Namespaces, Resources
from kubling.node.sandbox import Sandbox, cgroup_parent

_EXPANSION = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
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


def empty_dir(pod_dir: Path, volume: str) -> Path:
    return pod_dir / "volumes" / "empty-dir" / volume


def container_config(*, pod: Object, container: Object, image: ImageConfig, sandbox: Sandbox,
                     container_id: ContainerId, rootfs: Path, node_name: str,
                     host_ip: str) -> ContainerConfig:
    """The runtime's view of one container; raises ContainerSpecError."""
    spec = pod.get("spec") or {}
    env = environment(pod, container, image, pod_ip=sandbox.pod_ip, node_name=node_name,
                      host_ip=host_ip)
    values = dict(item.split("=", 1) for item in env if "=" in item)
    args = [expand(a, values) for a in command_line(container, image)]
    if not args:
        raise ContainerSpecError("no command specified")
    uid, gid = user_of(pod, container, image, rootfs)
    context = container.get("securityContext") or {}
    capabilities = context.get("capabilities") or {}
    return ContainerConfig(
        id=str(container_id),
        rootfs=rootfs,
        args=args,
        env=env,
        cwd=container.get("workingDir") or image.working_dir or "/",
        uid=uid,
        gid=gid,
        hostname=None if spec.get("hostNetwork") else _hostname(sandbox),
        mounts=mounts(pod, container, sandbox),
        namespaces=Namespaces(network=HOST if sandbox.netns_path is None
                              else str(sandbox.netns_path)),
        cgroups_path=f"{cgroup_parent(sandbox.uid)}/{container['name']}",
        resources=resources(container),
        cap_add=list(capabilities.get("add") or []),
        cap_drop=list(capabilities.get("drop") or []),
        privileged=bool(context.get("privileged")),
        readonly_rootfs=bool(context.get("readOnlyRootFilesystem")),
        annotations={"io.kubernetes.pod.uid": sandbox.uid,
                     "io.kubernetes.pod.name": pod["metadata"]["name"],
                     "io.kubernetes.pod.namespace": pod["metadata"].get("namespace", ""),
                     "io.kubernetes.container.name": container["name"]},
    )


def command_line(container: Object, image: ImageConfig) -> list[str]:
    """Upstream's rule: ``command`` replaces Entrypoint (and drops Cmd), ``args`` replace
    Cmd; either may be absent."""
    command = container.get("command")
    args = container.get("args")
    if command:
        return [*command, *(args or [])]
    return [*image.entrypoint, *(args if args else image.cmd)]


def environment(pod: Object, container: Object, image: ImageConfig, *, pod_ip: str,
                node_name: str, host_ip: str) -> list[str]:
    """The image's environment, overridden by the container's ``env`` in order; each value
    may refer to variables defined before it with ``$(NAME)``."""
    merged: dict[str, str] = {}
    for item in image.env:
        name, _, value = item.partition("=")
        merged[name] = value
    defined: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" in var:
            value = _value_from(pod, var["valueFrom"], pod_ip=pod_ip, node_name=node_name,
                                host_ip=host_ip)
        else:
            value = expand(str(var.get("value") or ""), defined)
        defined[name] = value
        merged[name] = value
    return [f"{k}={v}" for k, v in merged.items()]


def expand(text: str, values: Mapping[str, str]) -> str:
    """``$(VAR)`` becomes VAR's value when defined (left as written otherwise), ``$$`` a
    literal ``$``: Kubernetes' expansion rules."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return values.get(match.group(1), match.group(0))
    return _EXPANSION.sub(one, text)


def _value_from(pod: Object, source: Object, *, pod_ip: str, node_name: str,
                host_ip: str) -> str:
    ref = source.get("fieldRef")
    if ref is None:
        raise ContainerSpecError(
            f"env valueFrom {sorted(source)} is not supported by this node yet")
    md = pod["metadata"]
    path = ref.get("fieldPath", "")
    fields = {"metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", ""),
              "metadata.uid": md.get("uid", ""), "status.podIP": pod_ip,
              "status.hostIP": host_ip, "spec.nodeName": node_name,
              "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "")}
    if path in fields:
        return str(fields[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((md.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerSpecError(f"unsupported fieldPath {path!r}")


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


def mounts(pod: Object, container: Object, sandbox: Sandbox) -> list[Mount]:
    """The sandbox's managed files, then the container's volumeMounts of supported volumes
    (emptyDir for now); a mount of a volume kind this node cannot provide yet is an error
    the pod's status names."""
    spec = pod.get("spec") or {}
    out = [Mount.bind(sandbox.directory / "etc-hosts", "/etc/hosts"),
           Mount.bind(sandbox.directory / "resolv.conf", "/etc/resolv.conf")]
    if not spec.get("hostNetwork"):
        out.append(Mount.bind(sandbox.directory / "hostname", "/etc/hostname"))
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        if volume is None:
            raise ContainerSpecError(f'volume "{mount.get("name")}" not found in the pod')
        if "emptyDir" not in volume:
            kind = next((k for k in volume if k != "name"), "unknown")
            if mount.get("mountPath") == "/var/run/secrets/kubernetes.io/serviceaccount":
                continue  # the service account token volume: not provided by this node yet
            raise ContainerSpecError(f'volume "{volume["name"]}": {kind} volumes are not '
                                     "supported by this node yet")
        source = empty_dir(sandbox.directory, volume["name"])
        if mount.get("subPath"):
            source = source / mount["subPath"]
        source.mkdir(parents=True, exist_ok=True)
        out.append(Mount.bind(source, mount["mountPath"], readonly=bool(mount.get("readOnly"))))
    return out


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


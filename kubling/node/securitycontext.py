"""A pod's and its containers' ``securityContext`` as the kubelet applies them on the node.

The API server has already validated the fields; what is left is the kubelet's part:

- ``seccomp``: the container's ``seccompProfile`` over the pod's. Without one the kubelet's
  default (``seccompDefault: false``) is ``Unconfined``; ``RuntimeDefault`` is kubling's
  profile (``runtime/seccomp.py``); ``Localhost`` reads an OCI/Docker-format profile below
  the node's seccomp directory (``<data-dir>/seccomp``, the kubelet's
  ``/var/lib/kubelet/seccomp``). Privileged containers are never filtered.
- ``no_new_privileges``: set only when ``allowPrivilegeEscalation`` is explicitly false, as
  the kubelet does (an unset field means escalation is allowed).
- ``verify_run_as_non_root``: ``runAsNonRoot`` checked against the user the process will
  really run as, with the kubelet's messages (a ``CreateContainerConfigError``).
- ``forbidden_sysctl``: the kubelet's sysctl admission — only the safe, namespaced sysctls
  are allowed (``--allowed-unsafe-sysctls`` is not offered yet), and none of the network
  ones with ``hostNetwork`` nor the IPC ones with ``hostIPC``; a pod asking for another is
  rejected by the node as ``SysctlForbidden``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from kubling.api.meta import Object
from kubling.node.runtime import RUNTIME_DEFAULT
from kubling.node.runtime.spec import SeccompProfile

__all__ = [
    "SAFE_SYSCTLS",
    "SecurityContextError",
    "forbidden_sysctl",
    "no_new_privileges",
    "seccomp",
    "sysctls",
    "verify_run_as_non_root",
]

#: The kubelet's safe sysctls (pkg/kubelet/sysctl, Kubernetes 1.32): namespaced, and isolated
#: between pods on one node.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
})

#: Docker-format architecture names -> the OCI ones runc reads.
_ARCHES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


class SecurityContextError(Exception):
    """The container cannot run as its security context asks (CreateContainerConfigError)."""


def _contexts(pod: Object, container: Object) -> tuple[Object, Object]:
    return ((pod.get("spec") or {}).get("securityContext") or {},
            container.get("securityContext") or {})


def seccomp(pod: Object, container: Object, profile_root: Path) -> SeccompProfile | None:
    """The container's seccomp filter: None (unconfined), RUNTIME_DEFAULT, or a profile."""
    pod_ctx, ctx = _contexts(pod, container)
    if ctx.get("privileged"):
        return None
    profile = ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}
    kind = profile.get("type")
    if kind == "RuntimeDefault":
        return RUNTIME_DEFAULT
    if kind == "Localhost":
        return _localhost_profile(profile_root, str(profile.get("localhostProfile") or ""))
    return None


def _localhost_profile(root: Path, name: str) -> dict[str, Any]:
    path = root / name
    if not name or ".." in Path(name).parts or name.startswith("/"):
        raise SecurityContextError(
            f"failed to generate seccomp security profile: invalid localhostProfile {name!r}")
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise SecurityContextError(
            f"failed to generate seccomp security profile: open {path}: "
            "no such file or directory") from None
    except (OSError, ValueError) as err:
        raise SecurityContextError(
            f"failed to generate seccomp security profile: cannot load {path}: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("defaultAction"), str):
        raise SecurityContextError(
            f"failed to generate seccomp security profile: {path}: defaultAction is required")
    return _oci_profile(document)


def _oci_profile(document: dict[str, Any]) -> dict[str, Any]:
    """Docker's profile format is OCI's plus ``archMap``; runc wants only OCI's fields."""
    profile: dict[str, Any] = {"defaultAction": document["defaultAction"]}
    if "defaultErrnoRet" in document:
        profile["defaultErrnoRet"] = document["defaultErrnoRet"]
    arches = list(document.get("architectures") or [])
    for entry in document.get("archMap") or []:
        if isinstance(entry, dict) and entry.get("architecture") == _ARCHES.get(
                platform.machine()):
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
    if arches:
        profile["architectures"] = list(dict.fromkeys(arches))
    syscalls = []
    for rule in document.get("syscalls") or []:
        if not isinstance(rule, dict):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        kept = {k: v for k, v in rule.items() if k in ("action", "args", "errnoRet")}
        syscalls.append({"names": names, **kept})
    if syscalls:
        profile["syscalls"] = syscalls
    return profile


def no_new_privileges(container: Object) -> bool:
    return (container.get("securityContext") or {}).get("allowPrivilegeEscalation") is False


def sysctls(pod: Object) -> dict[str, str]:
    """The pod's sysctls for the runtime (``a/b`` names written with dots, as the kernel's)."""
    items = ((pod.get("spec") or {}).get("securityContext") or {}).get("sysctls") or []
    return {_dotted(str(i.get("name"))): str(i.get("value", "")) for i in items
            if isinstance(i, dict) and i.get("name")}


def _dotted(name: str) -> str:
    """A sysctl may be written ``net/ipv4/ip_local_port_range``; a dot within a part is then
    kept as a slash in the kernel's dotted name (``net.ipv4.conf.eth0/100.rp_filter``)."""
    if "/" not in name:
        return name
    return ".".join(part.replace(".", "/") for part in name.split("/"))


def forbidden_sysctl(pod: Object) -> str | None:
    """The kubelet's admission message for a pod asking for a sysctl it does not allow."""
    spec = pod.get("spec") or {}
    for name in sysctls(pod):
        if name not in SAFE_SYSCTLS:
            return f'forbidden sysctl: "{name}" not allowlisted'
        if spec.get("hostNetwork") and name.startswith("net."):
            return f'forbidden sysctl: "{name}" not allowed with host net enabled'
        if spec.get("hostIPC") and (name.startswith("kernel.shm") or name.startswith(
                "kernel.msg") or name.startswith("kernel.sem") or name.startswith("fs.mqueue.")):
            return f'forbidden sysctl: "{name}" not allowed with host ipc enabled'
    return None


def verify_run_as_non_root(pod: Object, container: Object, uid: int,
                           image_user: str) -> None:
    """``runAsNonRoot``: the kubelet refuses to start a process that would run as root, or
    whose user it cannot tell is not root (a user name in the image it cannot resolve)."""
    pod_ctx, ctx = _contexts(pod, container)
    if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
        return
    md = pod.get("metadata") or {}
    who = (f'(pod: "{md.get("name", "")}_{md.get("namespace", "")}({md.get("uid", "")})", '
           f'container: {container.get("name", "")})')
    run_as_user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    if run_as_user is not None:
        if int(run_as_user) == 0:
            raise SecurityContextError(f"container's runAsUser breaks non-root policy {who}")
        return
    user = image_user.partition(":")[0]
    if user and not user.isdigit():
        raise SecurityContextError(
            f"container has runAsNonRoot and image has non-numeric user ({user}), "
            f"cannot verify user is non-root {who}")
    if uid == 0:
        raise SecurityContextError(f"container has runAsNonRoot and image will run as root {who}")

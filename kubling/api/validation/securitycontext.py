"""Pod and container ``securityContext`` validation, with upstream's field paths and words.

The node applies these fields (``kubling/node/securitycontext.py``) trusting that what
reaches it is well formed: a seccomp type it knows, a Localhost profile path that stays
below the profile directory, user and group IDs in range, sysctl names the kernel could
have. What only the node can judge (an unsafe sysctl, runAsNonRoot against the image's
user) is left to it, as upstream leaves it to the kubelet.
"""

from __future__ import annotations

import re
from typing import Any

from kubling.api.field import FieldError, Path, duplicate, invalid, required
from kubling.api.validation import _common as c

Obj = dict[str, Any]
Errs = list[FieldError]

__all__ = ["validate_container_security_context", "validate_pod_security_context",
           "validate_proc_mounts"]

_MAX_ID = 2147483647
_SYSCTL_SEGMENT = "[a-z0-9]([-_a-z0-9]*[a-z0-9])?"
_SYSCTL_FMT = f"({_SYSCTL_SEGMENT}[\\./])*{_SYSCTL_SEGMENT}"
_SYSCTL_RE = re.compile(f"^{_SYSCTL_FMT}$")
_SYSCTL_MAX = 253
#: The IPC namespace's sysctls (upstream's ``isIPCSysctl``).
_IPC_SYSCTLS = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")


def _ids(ctx: Obj, path: Path, *keys: str) -> Errs:
    errs: Errs = []
    for key in keys:
        value: Any = ctx.get(key)
        if c.is_int(value) and not 0 <= value <= _MAX_ID:
            errs.append(invalid(str(path.child(key)), value,
                                c.inclusive_range_error(0, _MAX_ID)))
    return errs


def _seccomp(profile: Any, path: Path) -> Errs:
    if not isinstance(profile, dict):
        return []
    kind = profile.get("type")
    local = profile.get("localhostProfile")
    if kind in (None, ""):
        return [required(str(path.child("type")), "type is required when seccompProfile is set")]
    errs = c.one_of(kind, path.child("type"), ["Localhost", "RuntimeDefault", "Unconfined"])
    if kind == "Localhost":
        if not local:
            errs.append(required(str(path.child("localhostProfile")),
                                 "must be set when seccomp type is Localhost"))
        else:
            errs.extend(_descending_path(local, path.child("localhostProfile")))
    elif local:
        errs.append(invalid(str(path.child("localhostProfile")), local,
                            "can only be set when seccomp type is Localhost"))
    return errs


def _descending_path(value: str, path: Path) -> Errs:
    """Upstream's ``validateLocalDescendingPath``: relative, and no ``..`` element."""
    errs: Errs = []
    if value.startswith("/"):
        errs.append(invalid(str(path), value, "must be a relative path"))
    if ".." in value.replace("\\", "/").split("/"):
        errs.append(invalid(str(path), value, "must not contain '..'"))
    return errs


def validate_container_security_context(ctx: Any, path: Path) -> Errs:
    if not isinstance(ctx, dict):
        return []
    errs = _ids(ctx, path, "runAsUser", "runAsGroup")
    errs.extend(_seccomp(ctx.get("seccompProfile"), path.child("seccompProfile")))
    if ctx.get("procMount") not in (None, ""):
        errs.extend(c.one_of(ctx.get("procMount"), path.child("procMount"),
                             ["Default", "Unmasked"]))

    if ctx.get("allowPrivilegeEscalation") is False:
        if ctx.get("privileged") is True:
            errs.append(invalid(str(path), ctx, "cannot set `allowPrivilegeEscalation` to "
                                                "false and `privileged` to true"))
        added = (ctx.get("capabilities") or {}).get("add") or []
        if isinstance(added, list) and "CAP_SYS_ADMIN" in added:
            errs.append(invalid(str(path), ctx, "cannot set `allowPrivilegeEscalation` to "
                                                "false and `capabilities.Add` CAP_SYS_ADMIN"))
    return errs


def validate_proc_mounts(spec: Obj, path: Path) -> Errs:
    """``procMount: Unmasked`` needs the pod's own user namespace (``hostUsers: false``)."""
    if spec.get("hostUsers") is False:
        return []
    errs: Errs = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for i, ctr in enumerate(c.dicts(spec, key)):
            if (ctr.get("securityContext") or {}).get("procMount") == "Unmasked":
                errs.append(invalid(
                    str(path.child(key).index(i).child("securityContext").child("procMount")),
                    "Unmasked", "`hostUsers` must be false to use `Unmasked`"))
    return errs


def validate_pod_security_context(spec: Obj, path: Path) -> Errs:
    ctx = spec.get("securityContext")
    if not isinstance(ctx, dict):
        return []
    errs = _ids(ctx, path, "runAsUser", "runAsGroup", "fsGroup")
    for i, group in enumerate(ctx.get("supplementalGroups") or []):
        if c.is_int(group) and not 0 <= group <= _MAX_ID:
            errs.append(invalid(str(path.child("supplementalGroups").index(i)), group,
                                c.inclusive_range_error(0, _MAX_ID)))
    if ctx.get("fsGroupChangePolicy") not in (None, ""):
        errs.extend(c.one_of(ctx.get("fsGroupChangePolicy"), path.child("fsGroupChangePolicy"),
                             ["OnRootMismatch", "Always"]))
    errs.extend(_seccomp(ctx.get("seccompProfile"), path.child("seccompProfile")))
    errs.extend(_sysctls(ctx.get("sysctls"), path.child("sysctls"),
                         host_network=bool(spec.get("hostNetwork")),
                         host_ipc=bool(spec.get("hostIPC"))))
    return errs


def _sysctls(items: Any, path: Path, *, host_network: bool, host_ipc: bool) -> Errs:
    errs: Errs = []
    seen: set[str] = set()
    for i, item in enumerate(items if isinstance(items, list) else []):
        name = item.get("name") if isinstance(item, dict) else None
        where = path.index(i).child("name")
        if not name:
            errs.append(required(str(where)))
            continue
        if len(name) > _SYSCTL_MAX or not _SYSCTL_RE.match(name):
            errs.append(invalid(str(where), name, f"must have at most {_SYSCTL_MAX} characters "
                                                  f"and match regex {_SYSCTL_FMT}"))
        canonical = name.replace("/", ".")
        if canonical in seen:
            errs.append(duplicate(str(where), name))
        seen.add(canonical)
        if host_network and canonical.startswith("net."):
            errs.append(invalid(str(where), name,
                                "may not be specified when 'hostNetwork' is true"))
        if host_ipc and canonical.startswith(_IPC_SYSCTLS):
            errs.append(invalid(str(where), name, "may not be specified when 'hostIPC' is true"))
    return errs

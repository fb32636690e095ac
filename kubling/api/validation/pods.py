"""Pod and pod-template validation: containers, volumes, resources, probes, updates.

Validation runs *after* defaulting, as upstream's does, so fields that defaulting always
fills (``restartPolicy``, ``dnsPolicy``, ``imagePullPolicy``, ...) are ``Required`` here.
Every workload kind reuses :func:`validate_pod_template_spec`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kubling.api.field import (
    ErrorType,
    FieldError,
    Path,
    duplicate,
    forbidden,
    invalid,
    not_supported,
    required,
)
from kubling.api.names import (
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_label_value,
    validate_annotations,
    validate_labels,
)
from kubling.api.validation import _common as c
from kubling.api.validation._quantity import QUANTITY_MSG, parse_quantity
from kubling.api.validation.securitycontext import (
    validate_container_security_context,
    validate_pod_security_context,
    validate_proc_mounts,
)

Obj = dict[str, Any]
Errs = list[FieldError]

_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
_ENV_NAME_MSG = (
    "a valid environment variable name must consist only of printable ASCII characters "
    "other than '='"
)
_HOST_PATH_TYPES = [
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
]


# -- volumes ---------------------------------------------------------------------------------


def _default_mode(source: Obj, path: Path) -> Errs:
    mode = source.get("defaultMode")
    if mode is None or (c.is_int(mode) and 0 <= mode <= 0o777):
        return []
    return [invalid(str(path.child("defaultMode")), mode, _MODE_MSG)]


def _source_required(source: Obj, key: str, path: Path) -> Errs:
    return [] if source.get(key) else [required(str(path.child(key)))]


def _validate_volume_source(kind: str, source: Obj, path: Path) -> Errs:
    """The few source types kubling's kubelet serves get their key fields checked."""
    here = path.child(kind)
    if kind == "configMap":
        return _source_required(source, "name", here) + _default_mode(source, here)
    if kind == "secret":
        return _source_required(source, "secretName", here) + _default_mode(source, here)
    if kind == "persistentVolumeClaim":
        return _source_required(source, "claimName", here)
    if kind == "hostPath":
        errs = _source_required(source, "path", here)
        kind_type = source.get("type")
        if kind_type is not None and kind_type not in _HOST_PATH_TYPES:
            errs.append(not_supported(str(here.child("type")), kind_type, _HOST_PATH_TYPES))
        return errs
    if kind in ("downwardAPI", "projected"):
        return _default_mode(source, here)
    return []


def _validate_volume(vol: Obj, path: Path) -> Errs:
    errs: Errs = []
    name = vol.get("name")
    if not name:
        errs.append(required(str(path.child("name"))))
    else:
        errs.extend(c.dns_label(name, path.child("name")))
    sources = [k for k, v in vol.items() if k != "name" and v is not None]
    if not sources:
        errs.append(required(str(path), "must specify a volume type"))
    for extra in sources[1:]:
        errs.append(forbidden(str(path.child(extra)), "may not specify more than 1 volume type"))
    for kind in sources[:1]:
        source = vol[kind]
        if isinstance(source, dict):
            errs.extend(_validate_volume_source(kind, source, path))
    return errs


def validate_volumes(spec: Obj, path: Path) -> tuple[Errs, set[str]]:
    """Volume names are DNS labels, unique; each volume has exactly one source."""
    errs: Errs = []
    names: set[str] = set()
    for i, vol in enumerate(c.dicts(spec, "volumes")):
        errs.extend(_validate_volume(vol, path.index(i)))
        name = vol.get("name")
        if isinstance(name, str) and name:
            if name in names:
                errs.append(duplicate(str(path.index(i).child("name")), name))
            names.add(name)
    return errs, names


# -- containers ------------------------------------------------------------------------------


def _validate_ports(ctr: Obj, path: Path, host_network: bool) -> Errs:
    errs: Errs = []
    names: set[str] = set()
    for i, port in enumerate(c.dicts(ctr, "ports")):
        here = path.index(i)
        name = port.get("name")
        if name:
            errs.extend(
                invalid(str(here.child("name")), name, m) for m in c.is_valid_port_name(name)
            )
            if name in names:
                errs.append(duplicate(str(here.child("name")), name))
            names.add(name)
        container_port = port.get("containerPort")
        if not container_port:
            errs.append(required(str(here.child("containerPort"))))
        else:
            errs.extend(
                invalid(str(here.child("containerPort")), container_port, m)
                for m in c.is_valid_port_num(container_port)
            )
        host_port = port.get("hostPort")
        if host_port:
            errs.extend(
                invalid(str(here.child("hostPort")), host_port, m)
                for m in c.is_valid_port_num(host_port)
            )
            if host_network and host_port != container_port:
                msg = "must match `containerPort` when `hostNetwork` is true"
                errs.append(invalid(str(here.child("hostPort")), host_port, msg))
        errs.extend(c.protocol(port.get("protocol"), here.child("protocol")))
    return errs


def _is_valid_env_name(name: str) -> bool:
    """Relaxed env var names (upstream default since 1.32): printable ASCII except ``=``."""
    return all(32 <= ord(ch) <= 126 and ch != "=" for ch in name)


def _validate_key_ref(ref: Obj, path: Path) -> Errs:
    errs = _source_required(ref, "key", path)
    errs.extend(_source_required(ref, "name", path))
    return errs


def _validate_value_from(env: Obj, path: Path) -> Errs:
    value_from = env.get("valueFrom")
    if not isinstance(value_from, dict):
        return []
    sources = [
        k
        for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
        if value_from.get(k)
    ]
    errs: Errs = []
    if not sources:
        msg = "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
        return [invalid(str(path), "", msg)]
    if env.get("value"):
        errs.append(invalid(str(path), "", "may not be specified when `value` is not empty"))
    elif len(sources) > 1:
        errs.append(invalid(str(path), "", "may not have more than one field specified at a time"))
    for key in ("configMapKeyRef", "secretKeyRef"):
        ref = value_from.get(key)
        if isinstance(ref, dict):
            errs.extend(_validate_key_ref(ref, path.child(key)))
    field_ref = value_from.get("fieldRef")
    if isinstance(field_ref, dict):
        errs.extend(_source_required(field_ref, "fieldPath", path.child("fieldRef")))
    return errs


def _validate_env(ctr: Obj, path: Path) -> Errs:
    errs: Errs = []
    for i, env in enumerate(c.dicts(ctr, "env")):
        here = path.index(i)
        name = env.get("name")
        if not name:
            errs.append(required(str(here.child("name"))))
        elif not _is_valid_env_name(str(name)):
            errs.append(invalid(str(here.child("name")), name, _ENV_NAME_MSG))
        errs.extend(_validate_value_from(env, here.child("valueFrom")))
    return errs


def _validate_volume_mounts(ctr: Obj, path: Path, volumes: set[str]) -> Errs:
    errs: Errs = []
    mount_points: set[str] = set()
    for i, mount in enumerate(c.dicts(ctr, "volumeMounts")):
        here = path.index(i)
        name = mount.get("name") or ""
        if not name:
            errs.append(required(str(here.child("name"))))
        if name not in volumes:
            errs.append(FieldError(ErrorType.NOT_FOUND, str(here.child("name")), "", name))
        mount_path = mount.get("mountPath") or ""
        if not mount_path:
            errs.append(required(str(here.child("mountPath"))))
        elif mount_path in mount_points:
            errs.append(invalid(str(here.child("mountPath")), mount_path, "must be unique"))
        mount_points.add(mount_path)
    return errs


def _validate_resource_name(name: str, path: Path) -> Errs:
    errs = [invalid(str(path), name, m) for m in is_qualified_name(name)]
    if errs:
        return errs
    if "/" not in name and name not in _STANDARD_RESOURCES and not name.startswith("hugepages-"):
        return [invalid(str(path), name, "must be a standard resource for containers")]
    return []


def _validate_quantity(name: str, value: Any, path: Path) -> Errs:
    amount = parse_quantity(value)
    if amount is None:
        return [invalid(str(path), value, QUANTITY_MSG)]
    errs = [] if amount >= 0 else [invalid(str(path), value, c.NEGATIVE_MSG)]
    native = "/" not in name or name.split("/", 1)[0].endswith("kubernetes.io")
    if not native and amount.denominator != 1:
        errs.append(invalid(str(path), value, "must be an integer"))
    return errs


def _overcommit_allowed(name: str) -> bool:
    """Only native, non-hugepage resources may have requests below limits."""
    native = "/" not in name or name.split("/", 1)[0].endswith("kubernetes.io")
    return native and not name.startswith("hugepages-")


def _validate_request(name: str, value: Any, limits: Obj, path: Path) -> Errs:
    request = parse_quantity(value)
    limit = parse_quantity(limits.get(name))
    req_path = str(path.child("requests"))
    if name not in limits:
        if _overcommit_allowed(name):
            return []
        msg = "Limit must be set for non overcommitable resources"
        return [required(str(path.child("limits")), msg)]
    if request is None or limit is None:
        return []
    if request != limit and not _overcommit_allowed(name):
        msg = f"must be equal to {name} limit of {limits[name]}"
        return [invalid(req_path, value, msg)]
    if request > limit:
        return [
            invalid(
                req_path, value, f"must be less than or equal to {name} limit of {limits[name]}"
            )
        ]
    return []


def validate_resources(resources: Any, path: Path) -> Errs:
    """Known resource names, non-negative quantities, and requests never above limits."""
    if not isinstance(resources, dict):
        return []
    errs: Errs = []
    limits = c.sub(resources, "limits")
    requests = c.sub(resources, "requests")
    for name, value in limits.items():
        here = path.child("limits").key(name)
        errs.extend(_validate_resource_name(name, here) + _validate_quantity(name, value, here))
    for name, value in requests.items():
        here = path.child("requests").key(name)
        errs.extend(_validate_resource_name(name, here) + _validate_quantity(name, value, here))
        errs.extend(_validate_request(name, value, limits, path))
    return errs


_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def _validate_handler(handler: Obj, path: Path) -> Errs:
    present = [k for k in _HANDLERS if handler.get(k) is not None]
    if not present:
        return [required(str(path), "must specify a handler type")]
    errs: Errs = []
    if len(present) > 1:
        errs.append(
            forbidden(str(path.child(present[1])), "may not specify more than 1 handler type")
        )
    http = c.sub(handler, "httpGet")
    if http:
        errs.extend(c.port_num_or_name(http.get("port"), path.child("httpGet").child("port")))
        errs.extend(
            c.one_of(http.get("scheme"), path.child("httpGet").child("scheme"), ["HTTP", "HTTPS"])
        )
    tcp = c.sub(handler, "tcpSocket")
    if tcp:
        errs.extend(c.port_num_or_name(tcp.get("port"), path.child("tcpSocket").child("port")))
    return errs


def _validate_probe(probe: Any, path: Path, single_success: bool) -> Errs:
    if not isinstance(probe, dict):
        return []
    errs = _validate_handler(probe, path)
    for key in (
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ):
        errs.extend(c.nonnegative(probe.get(key), path.child(key)))
    threshold = probe.get("successThreshold")
    if single_success and c.is_int(threshold) and threshold != 1:
        errs.append(invalid(str(path.child("successThreshold")), threshold, "must be 1"))
    return errs


def _validate_image(ctr: Obj, path: Path) -> Errs:
    image = ctr.get("image")
    if not image:
        return [required(str(path))]
    if isinstance(image, str) and image != image.strip():
        return [invalid(str(path), image, "must not have leading or trailing whitespace")]
    return []


def _validate_container_name(ctr: Obj, path: Path, seen: set[str]) -> Errs:
    name = ctr.get("name")
    if not name:
        return [required(str(path))]
    errs = c.dns_label(name, path)
    if name in seen:
        errs.append(duplicate(str(path), name))
    seen.add(str(name))
    return errs


def _validate_init_only(ctr: Obj, path: Path, is_init: bool) -> Errs:
    """Container ``restartPolicy`` makes an init container a sidecar; nothing else."""
    policy = ctr.get("restartPolicy")
    sidecar = is_init and policy == "Always"
    errs: Errs = []
    if policy is not None and not is_init:
        errs.append(
            forbidden(str(path.child("restartPolicy")), "may not be set for non-init containers")
        )
    elif policy is not None and policy != "Always":
        errs.append(not_supported(str(path.child("restartPolicy")), policy, ["Always"]))
    if is_init and not sidecar:
        for key in ("livenessProbe", "readinessProbe", "startupProbe"):
            if ctr.get(key) is not None:
                msg = "may not be set for init containers without restartPolicy=Always"
                errs.append(forbidden(str(path.child(key)), msg))
    return errs


def _validate_container_common(
    ctr: Obj, path: Path, volumes: set[str], host_network: bool
) -> Errs:
    """Upstream ``validateContainerCommon``: what every kind of container must satisfy
    (regular, init and ephemeral alike); the name is checked by the caller."""
    errs = _validate_image(ctr, path.child("image"))
    errs.extend(
        c.one_of(
            ctr.get("imagePullPolicy"),
            path.child("imagePullPolicy"),
            ["Always", "IfNotPresent", "Never"],
        )
    )
    errs.extend(
        c.one_of(
            ctr.get("terminationMessagePolicy"),
            path.child("terminationMessagePolicy"),
            ["File", "FallbackToLogsOnError"],
        )
    )
    errs.extend(_validate_ports(ctr, path.child("ports"), host_network))
    errs.extend(_validate_env(ctr, path.child("env")))
    errs.extend(_validate_volume_mounts(ctr, path.child("volumeMounts"), volumes))
    errs.extend(validate_resources(ctr.get("resources"), path.child("resources")))
    errs.extend(validate_container_security_context(ctr.get("securityContext"),
                                                    path.child("securityContext")))
    return errs


def _validate_container(ctr: Obj, path: Path, volumes: set[str], host_network: bool) -> Errs:
    errs = _validate_container_common(ctr, path, volumes, host_network)
    errs.extend(_validate_probe(ctr.get("readinessProbe"), path.child("readinessProbe"), False))
    errs.extend(_validate_probe(ctr.get("livenessProbe"), path.child("livenessProbe"), True))
    errs.extend(_validate_probe(ctr.get("startupProbe"), path.child("startupProbe"), True))
    return errs


def _validate_containers(spec: Obj, path: Path, volumes: set[str]) -> Errs:
    """Container names are unique across ``initContainers`` and ``containers``."""
    errs: Errs = []
    seen: set[str] = set()
    host_network = spec.get("hostNetwork") is True
    if not c.dicts(spec, "containers"):
        errs.append(required(str(path.child("containers"))))
    for key in ("initContainers", "containers"):
        for i, ctr in enumerate(c.dicts(spec, key)):
            here = path.child(key).index(i)
            errs.extend(_validate_container_name(ctr, here.child("name"), seen))
            errs.extend(_validate_container(ctr, here, volumes, host_network))
            errs.extend(_validate_init_only(ctr, here, key == "initContainers"))
    return errs


# -- ephemeral containers --------------------------------------------------------------------

EPHEMERAL_FORBIDDEN_MSG = "cannot be set for an Ephemeral Container"

#: Container fields an ephemeral container may not set, in upstream's struct order (the
#: complement of upstream's ``allowedEphemeralContainerFields``): a debugging container gets
#: no ports, resources, probes or lifecycle, so nothing of the workload comes to rely on it.
_EPHEMERAL_FORBIDDEN = (
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
)


def _is_set(value: Any) -> bool:
    """Go's "differs from the zero value": absent, null, empty and false are all unset
    (``resources: {}``, which every container carries after defaulting, is unset)."""
    return value not in (None, False, 0, "", [], {})


def _validate_ephemeral_container(
    ctr: Obj, path: Path, volumes: set[str], host_network: bool, others: set[str]
) -> Errs:
    """``validateEphemeralContainers`` for one container, less the name's uniqueness."""
    errs = _validate_container_common(ctr, path, volumes, host_network)
    target = ctr.get("targetContainerName")
    if target and target not in others:
        errs.append(
            FieldError(ErrorType.NOT_FOUND, str(path.child("targetContainerName")), "", target)
        )
    errs.extend(
        forbidden(str(path.child(key)), EPHEMERAL_FORBIDDEN_MSG)
        for key in _EPHEMERAL_FORBIDDEN
        if _is_set(ctr.get(key))
    )
    for i, mount in enumerate(c.dicts(ctr, "volumeMounts")):
        here = path.child("volumeMounts").index(i)
        errs.extend(
            forbidden(str(here.child(key)), EPHEMERAL_FORBIDDEN_MSG)
            for key in ("subPath", "subPathExpr")
            if mount.get(key)
        )
    return errs


def _validate_ephemeral_containers(spec: Obj, path: Path, volumes: set[str]) -> Errs:
    """Names are unique across all three lists; a target must be a regular or init one."""
    others = {
        str(ctr.get("name"))
        for key in ("initContainers", "containers")
        for ctr in c.dicts(spec, key)
        if ctr.get("name")
    }
    seen = set(others)
    host_network = spec.get("hostNetwork") is True
    errs: Errs = []
    for i, ctr in enumerate(c.dicts(spec, "ephemeralContainers")):
        here = path.index(i)
        errs.extend(_validate_container_name(ctr, here.child("name"), seen))
        errs.extend(_validate_ephemeral_container(ctr, here, volumes, host_network, others))
    return errs


# -- pod spec --------------------------------------------------------------------------------

TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]


def _validate_toleration(tol: Obj, path: Path) -> Errs:
    errs: Errs = []
    key = tol.get("key") or ""
    operator = tol.get("operator") or ""
    effect = tol.get("effect") or ""
    if key:
        errs.extend(invalid(str(path.child("key")), key, m) for m in is_qualified_name(str(key)))
    elif operator != "Exists":
        msg = 'operator must be Exists when `key` is empty, which means "match all values and all keys"'
        errs.append(invalid(str(path.child("operator")), operator, msg))
    if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
        msg = "effect must be 'NoExecute' when `tolerationSeconds` is set"
        errs.append(invalid(str(path.child("effect")), effect, msg))
    if operator in ("", "Equal"):
        value = str(tol.get("value") or "")
        msgs = is_valid_label_value(value)
        if msgs:
            errs.append(invalid(str(path.child("operator")), value, ";".join(msgs)))
    elif operator == "Exists":
        if tol.get("value"):
            msg = "value must be empty when `operator` is 'Exists'"
            errs.append(invalid(str(path.child("operator")), tol, msg))
    else:
        errs.append(not_supported(str(path.child("operator")), operator, ["Equal", "Exists"]))
    if effect and effect not in TAINT_EFFECTS:
        errs.append(not_supported(str(path.child("effect")), effect, TAINT_EFFECTS))
    return errs


def validate_tolerations(spec: Obj, path: Path) -> Errs:
    errs: Errs = []
    for i, tol in enumerate(c.dicts(spec, "tolerations")):
        errs.extend(_validate_toleration(tol, path.index(i)))
    return errs


def _validate_names(spec: Obj, path: Path) -> Errs:
    errs: Errs = []
    checks = (
        ("nodeName", is_dns1123_subdomain),
        ("serviceAccountName", is_dns1123_subdomain),
        ("hostname", is_dns1123_label),
        ("subdomain", is_dns1123_label),
    )
    for key, check in checks:
        value = spec.get(key)
        if value:
            errs.extend(invalid(str(path.child(key)), value, m) for m in check(str(value)))
    return errs


def _validate_deadline(spec: Obj, path: Path) -> Errs:
    value = spec.get("activeDeadlineSeconds")
    if value is None or (c.is_int(value) and 1 <= value <= c.MAX_INT32):
        return []
    return [invalid(str(path), value, c.inclusive_range_error(1, c.MAX_INT32))]


def validate_pod_spec(spec: Any, path: Path, extra_volumes: frozenset[str] = frozenset()) -> Errs:
    """Upstream ``ValidatePodSpec`` for the checks kubling's components rely on.

    ``extra_volumes`` are names mounts may use without a ``volumes`` entry: a
    StatefulSet's ``volumeClaimTemplates`` become volumes only when its pods are made.
    """
    if not isinstance(spec, dict):
        return [required(str(path))]
    errs, volumes = validate_volumes(spec, path.child("volumes"))
    errs.extend(_validate_containers(spec, path, volumes | extra_volumes))
    errs.extend(
        _validate_ephemeral_containers(
            spec, path.child("ephemeralContainers"), volumes | extra_volumes
        )
    )
    errs.extend(
        c.one_of(
            spec.get("restartPolicy"), path.child("restartPolicy"), ["Always", "OnFailure", "Never"]
        )
    )
    errs.extend(
        c.one_of(
            spec.get("dnsPolicy"),
            path.child("dnsPolicy"),
            ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        )
    )
    errs.extend(validate_labels(spec.get("nodeSelector"), path.child("nodeSelector")))
    errs.extend(_validate_names(spec, path))
    errs.extend(_validate_deadline(spec, path.child("activeDeadlineSeconds")))
    errs.extend(validate_tolerations(spec, path.child("tolerations")))
    errs.extend(validate_pod_security_context(spec, path.child("securityContext")))
    errs.extend(validate_proc_mounts(spec, path))
    return errs


def validate_pod_template_spec(
    template: Any, path: Path, extra_volumes: frozenset[str] = frozenset()
) -> Errs:
    """A template's own labels/annotations, then its pod spec."""
    if not isinstance(template, dict):
        return [required(str(path))]
    meta = c.sub(template, "metadata")
    errs = validate_labels(meta.get("labels"), path.child("metadata").child("labels"))
    errs.extend(
        validate_annotations(meta.get("annotations"), path.child("metadata").child("annotations"))
    )
    errs.extend(validate_pod_spec(template.get("spec"), path.child("spec"), extra_volumes))
    if c.sub(template, "spec").get("ephemeralContainers"):
        errs.append(
            forbidden(
                str(path.child("spec").child("ephemeralContainers")),
                "ephemeral containers not allowed in pod template",
            )
        )
    return errs


def validate_pod(pod: Obj) -> Errs:
    return validate_pod_spec(pod.get("spec"), Path("spec"))


def validate_pod_create(pod: Obj) -> Errs:
    """``ValidatePodCreate``'s extra rule: ephemeral containers arrive only through the
    ``ephemeralcontainers`` subresource of a pod that already exists."""
    if c.sub(pod, "spec").get("ephemeralContainers"):
        return [forbidden("spec.ephemeralContainers", "cannot be set on create")]
    return []


def validate_pod_template(obj: Obj) -> Errs:
    return validate_pod_template_spec(obj.get("template"), Path("template"))


# -- pod updates -----------------------------------------------------------------------------

POD_UPDATE_MSG = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _container_updates(new: list[Obj], old: list[Obj], path: Path) -> tuple[Errs, bool]:
    if len(new) != len(old):
        return [forbidden(str(path), "pod updates may not add or remove containers")], True
    errs: Errs = []
    for i, ctr in enumerate(new):
        errs.extend(_validate_image(ctr, path.index(i).child("image")))
    return errs, False


def _same_except_seconds(old: Obj, new: Obj) -> bool:
    return {**old, "tolerationSeconds": new.get("tolerationSeconds")} == new


def _tolerations_only_added(new: list[Obj], old: list[Obj], path: Path) -> Errs:
    for tol in old:
        if not any(_same_except_seconds(tol, candidate) for candidate in new):
            msg = "existing toleration can not be modified except its tolerationSeconds"
            return [forbidden(str(path), msg)]
    return []


def _deadline_update(new: Any, old: Any, path: Path) -> Errs:
    if new is None:
        if old is not None:
            return [
                invalid(str(path), None, "must not update from a positive integer to nil value")
            ]
        return []
    if not c.is_int(new) or not 0 <= new <= c.MAX_INT32:
        return [invalid(str(path), new, c.inclusive_range_error(0, c.MAX_INT32))]
    if c.is_int(old) and old < new:
        return [invalid(str(path), new, "must be less than or equal to previous value")]
    return []


def _munge(new_spec: Obj, old_spec: Obj) -> Obj:
    """The new spec with every legitimately mutable field reset to the old value."""
    munged: Obj = copy.deepcopy(new_spec)
    for key in ("containers", "initContainers"):
        for ctr, old_ctr in zip(c.dicts(munged, key), c.dicts(old_spec, key), strict=False):
            ctr["image"] = old_ctr.get("image")
    for key in ("activeDeadlineSeconds", "tolerations"):
        munged.pop(key, None)
        if key in old_spec:
            munged[key] = old_spec[key]
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    if (
        isinstance(old_grace, int)
        and old_grace < 0
        and munged.get("terminationGracePeriodSeconds") == 1
    ):
        munged["terminationGracePeriodSeconds"] = old_grace
    return munged


def validate_pod_update(new: Obj, old: Obj) -> Errs:
    """Only images, a shrinking deadline, added tolerations and a grace fix may change."""
    spec_path = Path("spec")
    new_spec, old_spec = c.sub(new, "spec"), c.sub(old, "spec")
    errs: Errs = []
    for key in ("containers", "initContainers"):
        found, stop = _container_updates(
            c.dicts(new_spec, key), c.dicts(old_spec, key), spec_path.child(key)
        )
        errs.extend(found)
        if stop:
            return errs
    errs.extend(
        _tolerations_only_added(
            c.dicts(new_spec, "tolerations"),
            c.dicts(old_spec, "tolerations"),
            spec_path.child("tolerations"),
        )
    )
    deadline = _deadline_update(
        new_spec.get("activeDeadlineSeconds"),
        old_spec.get("activeDeadlineSeconds"),
        spec_path.child("activeDeadlineSeconds"),
    )
    if deadline:
        return errs + deadline
    munged = _munge(new_spec, old_spec)
    if munged != old_spec:
        errs.append(
            forbidden(str(spec_path), POD_UPDATE_MSG + "\n" + c.spec_diff(old_spec, munged))
        )
    return errs


# -- the ephemeralcontainers subresource -----------------------------------------------------

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


def validate_ephemeral_containers_update(new: Obj, old: Obj) -> Errs:
    """``ValidatePodEphemeralContainersUpdate``'s transition rule: ephemeral containers are
    only ever added. Matched by name, since a patch need not keep their order.

    ``new`` differs from ``old`` only in ``spec.ephemeralContainers`` (the subresource's
    strategy made it so); ``new`` on its own is checked by :func:`validate_pod`.
    """
    if MIRROR_POD_ANNOTATION in c.sub(old, "metadata", "annotations"):
        return [forbidden("", "static pods do not support ephemeral containers")]
    path = "spec.ephemeralContainers"
    new_list = c.dicts(c.sub(new, "spec"), "ephemeralContainers")
    wanted = {str(ctr.get("name")): ctr for ctr in new_list}
    errs: Errs = []
    for existing in c.dicts(c.sub(old, "spec"), "ephemeralContainers"):
        name = str(existing.get("name"))
        quoted = json.dumps(name)
        if name not in wanted:
            msg = f"existing ephemeral containers {quoted} may not be removed\n"
            errs.append(forbidden(path, msg))
        elif wanted[name] != existing:
            diff = c.spec_diff(existing, wanted[name])
            msg = f"existing ephemeral containers {quoted} may not be changed\n{diff}"
            errs.append(forbidden(path, msg))
    return errs

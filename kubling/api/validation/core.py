"""Core (``v1``) kinds other than pods: Services, ConfigMaps, Secrets, Namespaces, Nodes,
PersistentVolume(Claim)s and ReplicationControllers.

Messages follow ``pkg/apis/core/validation`` so kubectl users see what they would see on a
real cluster.  Metadata is validated separately (:mod:`kubling.api.names`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Any

from kubling.api.field import (
    ErrorType,
    FieldError,
    GoStringSlice,
    Path,
    duplicate,
    forbidden,
    immutable,
    invalid,
    not_supported,
    required,
    too_long,
)
from kubling.api.names import (
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_label_value,
    max_len_error,
    regex_error,
    validate_finalizer_name,
    validate_labels,
)
from kubling.api.validation import _common as c
from kubling.api.validation._quantity import QUANTITY_MSG, parse_quantity
from kubling.api.validation.pods import TAINT_EFFECTS, validate_pod_template_spec

Obj = dict[str, Any]
Errs = list[FieldError]

#: Upstream ``MaxSecretSize``: the cap on a ConfigMap's or Secret's total payload.
MAX_DATA_SIZE = 1024 * 1024
IMMUTABLE_WHEN_SET = "field is immutable when `immutable` is set"

_SPEC = Path("spec")
_IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
_CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


# -- services --------------------------------------------------------------------------------


def _validate_service_port(port: Obj, path: Path, need_name: bool, names: set[str]) -> Errs:
    errs: Errs = []
    name = port.get("name") or ""
    if need_name and not name:
        errs.append(required(str(path.child("name"))))
    elif name:
        errs.extend(c.dns_label(name, path.child("name")))
        if name in names:
            errs.append(duplicate(str(path.child("name")), name))
        names.add(name)
    number = port.get("port")
    errs.extend(invalid(str(path.child("port")), number, m) for m in c.is_valid_port_num(number))
    errs.extend(c.protocol(port.get("protocol"), path.child("protocol")))
    errs.extend(c.port_num_or_name(port.get("targetPort"), path.child("targetPort")))
    node_port = port.get("nodePort")
    if node_port:
        errs.extend(
            invalid(str(path.child("nodePort")), node_port, m)
            for m in c.is_valid_port_num(node_port)
        )
    return errs


def _validate_service_ports(spec: Obj, svc_type: Any) -> Errs:
    """Ports need names once there is more than one; (protocol, port) pairs are unique."""
    errs: Errs = []
    ports = c.dicts(spec, "ports")
    names: set[str] = set()
    pairs: set[tuple[Any, Any]] = set()
    node_ports: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        here = _SPEC.child("ports").index(i)
        errs.extend(_validate_service_port(port, here, len(ports) > 1, names))
        pair = (port.get("protocol"), port.get("port"))
        if pair in pairs:
            errs.append(duplicate(str(here), {"port": pair[1], "protocol": pair[0]}))
        pairs.add(pair)
        node_port = port.get("nodePort")
        if node_port and svc_type == "ClusterIP":
            msg = "may not be used when `type` is 'ClusterIP'"
            errs.append(forbidden(str(here.child("nodePort")), msg))
        elif node_port:
            if (pair[0], node_port) in node_ports:
                errs.append(duplicate(str(here.child("nodePort")), node_port))
            node_ports.add((pair[0], node_port))
    return errs


def _validate_cluster_ips(spec: Obj, svc_type: Any) -> Errs:
    errs: Errs = []
    cluster_ip = spec.get("clusterIP") or ""
    cluster_ips = spec.get("clusterIPs") or []
    ips_path = _SPEC.child("clusterIPs")
    if svc_type == "ExternalName":
        if cluster_ip or cluster_ips:
            errs.append(forbidden(str(ips_path), "may not be set for ExternalName services"))
        return errs
    if cluster_ip and cluster_ips and cluster_ips[0] != cluster_ip:
        errs.append(invalid(str(ips_path), GoStringSlice(cluster_ips),
                            "first value must match `clusterIP`"))
    for i, ip in enumerate(cluster_ips or ([cluster_ip] if cluster_ip else [])):
        if ip == "None":
            if i > 0:
                errs.append(
                    invalid(str(ips_path.index(i)), ip, "'None' must be the first and only value")
                )
        elif not _is_ip(ip):
            errs.append(invalid(str(ips_path.index(i)), ip, _IP_MSG))
    if cluster_ip == "None" and svc_type in ("LoadBalancer", "NodePort"):
        msg = f"may not be set to 'None' for {svc_type} services"
        errs.append(invalid(str(ips_path.index(0)), cluster_ip, msg))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        if not _is_ip(ip):
            errs.append(invalid(str(_SPEC.child("externalIPs").index(i)), ip, _IP_MSG))
    return errs


def _validate_external_name(spec: Obj) -> Errs:
    path = _SPEC.child("externalName")
    cname = str(spec.get("externalName") or "").removesuffix(".")
    if not cname:
        return [required(str(path))]
    return [invalid(str(path), cname, m) for m in is_dns1123_subdomain(cname)]


def _validate_service_policies(spec: Obj) -> Errs:
    errs: Errs = []
    optional = (
        ("externalTrafficPolicy", ["Cluster", "Local"]),
        ("internalTrafficPolicy", ["Cluster", "Local"]),
        ("ipFamilyPolicy", ["PreferDualStack", "RequireDualStack", "SingleStack"]),
    )
    for key, supported in optional:
        value = spec.get(key)
        if value is not None:
            errs.extend(c.one_of(value, _SPEC.child(key), supported))
    return errs


def validate_service(svc: Obj) -> Errs:
    spec = c.sub(svc, "spec")
    svc_type = spec.get("type")
    errs = c.one_of(
        svc_type, _SPEC.child("type"), ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
    )
    headless = spec.get("clusterIP") == "None"
    if not c.dicts(spec, "ports") and not headless and svc_type != "ExternalName":
        errs.append(required(str(_SPEC.child("ports"))))
    if svc_type == "ExternalName":
        errs.extend(_validate_external_name(spec))
    errs.extend(_validate_cluster_ips(spec, svc_type))
    errs.extend(_validate_service_ports(spec, svc_type))
    errs.extend(validate_labels(spec.get("selector"), _SPEC.child("selector")))
    errs.extend(
        c.one_of(spec.get("sessionAffinity"), _SPEC.child("sessionAffinity"), ["ClientIP", "None"])
    )
    errs.extend(_validate_service_policies(spec))
    return errs


def validate_service_update(new: Obj, old: Obj) -> Errs:
    """A Service keeps its cluster IP unless it changes to or from ``ExternalName``."""
    new_spec, old_spec = c.sub(new, "spec"), c.sub(old, "spec")
    if "ExternalName" in (new_spec.get("type"), old_spec.get("type")):
        return []
    old_ip, new_ip = old_spec.get("clusterIP") or "", new_spec.get("clusterIP") or ""
    if old_ip and new_ip and old_ip != new_ip:
        value = GoStringSlice(new_spec.get("clusterIPs") or [new_ip])
        return [invalid(str(_SPEC.child("clusterIPs").index(0)), value, "may not change once set")]
    return []


# -- configmaps & secrets --------------------------------------------------------------------


def is_config_map_key(key: str) -> list[str]:
    """Keys become file names in volumes, so no path tricks (``..``) are allowed."""
    errs: list[str] = []
    if len(key) > 253:
        errs.append(max_len_error(253))
    if not key or any(not (ch.isascii() and (ch.isalnum() or ch in "-._")) for ch in key):
        msg = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
        errs.append(regex_error(msg, "[-._a-zA-Z0-9]+", "key.name", "KEY_NAME", "key-name"))
    if key == ".":
        errs.append("must not be '.'")
    elif key == "..":
        errs.append("must not be '..'")
    elif key.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def _decoded_len(value: Any, path: Path, errs: Errs) -> int:
    """Length of a base64 ``[]byte`` field; undecodable data is reported, not counted."""
    try:
        return len(base64.b64decode(str(value), validate=True))
    except (binascii.Error, ValueError):
        errs.append(invalid(str(path), "<value omitted>", "must be a base64-encoded string"))
        return 0


def _validate_keys(data: Any, path: Path) -> Errs:
    keys = data.keys() if isinstance(data, dict) else []
    return [invalid(str(path.key(k)), k, m) for k in keys for m in is_config_map_key(k)]


def validate_config_map(cm: Obj) -> Errs:
    data = c.sub(cm, "data")
    binary = c.sub(cm, "binaryData")
    errs = _validate_keys(data, Path("data")) + _validate_keys(binary, Path("binaryData"))
    total = sum(len(str(v).encode()) for v in data.values())
    for key, value in binary.items():
        if key in data:
            msg = "duplicate of key present in binaryData"
            errs.append(invalid(str(Path("data").key(key)), key, msg))
        total += _decoded_len(value, Path("binaryData").key(key), errs)
    if total > MAX_DATA_SIZE:
        errs.append(too_long("", MAX_DATA_SIZE))
    return errs


def _immutable_payload(new: Obj, old: Obj, keys: tuple[str, ...]) -> Errs:
    """Once ``immutable: true`` is stored, neither it nor the payload may change."""
    if old.get("immutable") is not True:
        return []
    errs: Errs = []
    if new.get("immutable") is not True:
        errs.append(forbidden("immutable", IMMUTABLE_WHEN_SET))
    for key in keys:
        if (new.get(key) or {}) != (old.get(key) or {}):
            errs.append(forbidden(key, IMMUTABLE_WHEN_SET))
    return errs


def validate_config_map_update(new: Obj, old: Obj) -> Errs:
    return _immutable_payload(new, old, ("data", "binaryData"))


_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


def _validate_secret_type(secret: Obj, data: Obj) -> Errs:
    """Typed secrets promise certain keys to their consumers."""
    secret_type = secret.get("type") or ""
    data_path = Path("data")
    if secret_type == "kubernetes.io/service-account-token":
        annotations = c.sub(secret, "metadata").get("annotations") or {}
        key = "kubernetes.io/service-account.name"
        if not annotations.get(key):
            return [required(str(Path("metadata").child("annotations").key(key)))]
    if (
        secret_type == "kubernetes.io/basic-auth"
        and "username" not in data
        and "password" not in data
    ):
        return [required(str(data_path.key("username"))), required(str(data_path.key("password")))]
    return [
        required(str(data_path.key(k)))
        for k in _SECRET_REQUIRED_KEYS.get(secret_type, ())
        if k not in data
    ]


def validate_secret(secret: Obj) -> Errs:
    data = c.sub(secret, "data")
    errs = _validate_keys(data, Path("data"))
    total = sum(_decoded_len(v, Path("data").key(k), errs) for k, v in data.items())
    if total > MAX_DATA_SIZE:
        errs.append(too_long("data", MAX_DATA_SIZE))
    errs.extend(_validate_secret_type(secret, data))
    return errs


def validate_secret_update(new: Obj, old: Obj) -> Errs:
    errs: Errs = []
    if (new.get("type") or "") != (old.get("type") or ""):
        errs.append(immutable("type", new.get("type") or ""))
    return errs + _immutable_payload(new, old, ("data",))


# -- namespaces & nodes ----------------------------------------------------------------------


def validate_namespace(ns: Obj) -> Errs:
    errs: Errs = []
    for name in c.sub(ns, "spec").get("finalizers") or []:
        errs.extend(validate_finalizer_name(str(name), _SPEC.child("finalizers")))
    return errs


def _validate_taint(taint: Obj, path: Path) -> Errs:
    errs: Errs = []
    key = str(taint.get("key") or "")
    errs.extend(invalid(str(path.child("key")), key, m) for m in is_qualified_name(key))
    value = str(taint.get("value") or "")
    errs.extend(invalid(str(path.child("value")), value, m) for m in is_valid_label_value(value))
    errs.extend(c.one_of(taint.get("effect"), path.child("effect"), TAINT_EFFECTS))
    return errs


def validate_node(node: Obj) -> Errs:
    spec = c.sub(node, "spec")
    errs: Errs = []
    seen: set[tuple[Any, Any]] = set()
    for i, taint in enumerate(c.dicts(spec, "taints")):
        here = _SPEC.child("taints").index(i)
        errs.extend(_validate_taint(taint, here))
        pair = (taint.get("key"), taint.get("effect"))
        if pair in seen:
            detail = "taints must be unique by key and effect pair"
            errs.append(FieldError(ErrorType.DUPLICATE, str(here), detail, taint))
        seen.add(pair)
    for i, cidr in enumerate(spec.get("podCIDRs") or []):
        try:
            ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            errs.append(invalid(str(_SPEC.child("podCIDRs").index(i)), cidr, _CIDR_MSG))
    return errs


def validate_node_update(new: Obj, old: Obj) -> Errs:
    """A node's pod CIDRs are handed out once (by the node IPAM) and then fixed."""
    old_cidrs = c.sub(old, "spec").get("podCIDRs") or []
    new_cidrs = c.sub(new, "spec").get("podCIDRs") or []
    if old_cidrs and new_cidrs != old_cidrs:
        msg = 'node updates may not change podCIDR except from "" to valid'
        return [forbidden(str(_SPEC.child("podCIDRs")), msg)]
    return []


# -- persistent volumes ----------------------------------------------------------------------

ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
_PV_NON_SOURCE = {
    "accessModes",
    "capacity",
    "claimRef",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "mountOptions",
    "volumeMode",
    "nodeAffinity",
    "volumeAttributesClassName",
}


def _validate_access_modes(spec: Obj, path: Path, detail: str) -> Errs:
    modes = spec.get("accessModes") or []
    if not modes:
        return [required(str(path), detail)]
    return [not_supported(str(path), m, ACCESS_MODES) for m in modes if m not in ACCESS_MODES]


def _validate_volume_mode(spec: Obj) -> Errs:
    mode = spec.get("volumeMode")
    if mode is not None and mode not in ("Block", "Filesystem"):
        return [not_supported(str(_SPEC.child("volumeMode")), mode, ["Block", "Filesystem"])]
    return []


def validate_pvc(pvc: Obj) -> Errs:
    spec = c.sub(pvc, "spec")
    errs = _validate_access_modes(
        spec, _SPEC.child("accessModes"), "at least 1 access mode is required"
    )
    storage_path = _SPEC.child("resources").key("storage")
    requests = c.sub(spec, "resources", "requests")
    if "storage" not in requests:
        errs.append(required(str(storage_path)))
    else:
        amount = parse_quantity(requests["storage"])
        if amount is None:
            errs.append(invalid(str(storage_path), requests["storage"], QUANTITY_MSG))
        elif amount <= 0:
            errs.append(
                invalid(str(storage_path), requests["storage"], "must be greater than zero")
            )
    errs.extend(_validate_volume_mode(spec))
    return errs


def validate_pvc_update(new: Obj, old: Obj) -> Errs:
    """Only a bound claim's storage request (growing) and a first binding may change."""
    new_spec, old_spec = dict(c.sub(new, "spec")), dict(c.sub(old, "spec"))
    if not old_spec.get("volumeName"):
        old_spec["volumeName"] = new_spec.get("volumeName")
    new_spec["volumeAttributesClassName"] = old_spec.get("volumeAttributesClassName")
    errs: Errs = []
    bound = c.sub(new, "status").get("phase") == "Bound"
    new_size = parse_quantity(c.sub(new_spec, "resources", "requests").get("storage"))
    old_size = parse_quantity(c.sub(old_spec, "resources", "requests").get("storage"))
    if bound:
        new_spec["resources"] = old_spec.get("resources")
        if new_size is not None and old_size is not None and new_size < old_size:
            path = _SPEC.child("resources").child("requests").child("storage")
            errs.append(forbidden(str(path), "field can not be less than previous value"))
    clean_new = {k: v for k, v in new_spec.items() if v is not None}
    clean_old = {k: v for k, v in old_spec.items() if v is not None}
    if clean_new != clean_old:
        msg = (
            "spec is immutable after creation except resources.requests and "
            "volumeAttributesClassName for bound claims"
        )
        errs.append(forbidden("spec", msg + "\n" + c.spec_diff(clean_old, clean_new)))
    return errs


def validate_pv(pv: Obj) -> Errs:
    spec = c.sub(pv, "spec")
    errs = _validate_access_modes(spec, _SPEC.child("accessModes"), "")
    capacity = c.sub(spec, "capacity")
    if not capacity:
        errs.append(required(str(_SPEC.child("capacity"))))
    if "storage" not in capacity or len(capacity) > 1:
        errs.append(not_supported(str(_SPEC.child("capacity")), capacity, ["storage"]))
    if not any(k not in _PV_NON_SOURCE for k, v in spec.items() if v is not None):
        errs.append(required("spec", "must specify a volume type"))
    policy = spec.get("persistentVolumeReclaimPolicy")
    if policy is not None:
        path = _SPEC.child("persistentVolumeReclaimPolicy")
        errs.extend(c.one_of(policy, path, ["Delete", "Recycle", "Retain"]))
    errs.extend(_validate_volume_mode(spec))
    return errs


# -- replication controllers -----------------------------------------------------------------


def validate_replication_controller(rc: Obj) -> Errs:
    """The set-based ancestor of ReplicaSet: a plain map selector, always required."""
    spec = c.sub(rc, "spec")
    errs = c.nonnegative(spec.get("replicas"), _SPEC.child("replicas"))
    errs.extend(c.nonnegative(spec.get("minReadySeconds"), _SPEC.child("minReadySeconds")))
    selector = spec.get("selector") or {}
    if not selector:
        errs.append(required(str(_SPEC.child("selector"))))
    template = spec.get("template")
    if not isinstance(template, dict):
        return [*errs, required(str(_SPEC.child("template")))]
    errs.extend(validate_labels(selector, _SPEC.child("selector")))
    labels = c.sub(template, "metadata").get("labels") or {}
    if selector and any(labels.get(k) != v for k, v in selector.items()):
        path = _SPEC.child("template").child("metadata").child("labels")
        errs.append(invalid(str(path), labels, "`selector` does not match template `labels`"))
    errs.extend(validate_pod_template_spec(template, _SPEC.child("template")))
    errs.extend(
        controller_template_rules(template, _SPEC.child("template"), "ReplicationController")
    )
    return errs


def controller_template_rules(template: Obj, path: Path, kind: str) -> Errs:
    """Pods of long-running controllers restart forever and have no deadline."""
    spec = c.sub(template, "spec")
    errs: Errs = []
    policy = spec.get("restartPolicy")
    if policy and policy != "Always":
        errs.append(
            not_supported(str(path.child("spec").child("restartPolicy")), policy, ["Always"])
        )
    if spec.get("activeDeadlineSeconds") is not None:
        msg = f"activeDeadlineSeconds in {kind} is not Supported"
        errs.append(forbidden(str(path.child("spec").child("activeDeadlineSeconds")), msg))
    return errs

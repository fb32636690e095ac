"""Columns of the core (``v1``) kinds other than pods and events, as kube-apiserver prints them.

Each ``*_cells`` function mirrors upstream's ``print<Kind>`` for one object; values a field
lacks print as upstream's zero value (``0``, ``""``) or its placeholder (``<none>``,
``<unset>``, ``<unknown>``), never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

_NAME, _AGE, _col, _wide = common.NAME, common.AGE, common.column, common.wide


# -- namespaces --------------------------------------------------------------------------

NAMESPACE_COLUMNS = [_NAME, _col("Status", "The status of the namespace"), _AGE]


def namespace_cells(obj: Object) -> list[Any]:
    return [common.name(obj), common.text(common.dig(obj, "status", "phase")), common.age(obj)]


# -- nodes -------------------------------------------------------------------------------

NODE_COLUMNS = [
    _NAME,
    _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"),
    _AGE,
    _col("Version", "Kubelet Version reported by the node."),
    _wide("Internal-IP", "List of addresses reachable to the node."),
    _wide("External-IP", "List of addresses reachable to the node."),
    _wide("OS-Image", "OS Image reported by the node from /etc/os-release."),
    _wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r'."),
    _wide("Container-Runtime", "ContainerRuntime Version reported by the node."),
]

_ROLE_PREFIX = "node-role.kubernetes.io/"
_ROLE_LABEL = "kubernetes.io/role"


def node_status(obj: Object) -> str:
    """``Ready`` / ``NotReady`` / ``Unknown``, then ``SchedulingDisabled`` when cordoned."""
    ready: Mapping[str, Any] | None = None
    for cond in common.dicts(common.dig(obj, "status", "conditions")):
        if cond.get("type") == "Ready":
            ready = cond  # the last one wins, as in upstream's condition map
    if ready is None:
        parts = ["Unknown"]
    else:
        parts = ["Ready" if ready.get("status") == "True" else "NotReady"]
    if common.dig(obj, "spec", "unschedulable") is True:
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def node_roles(obj: Object) -> str:
    """Roles from ``node-role.kubernetes.io/<role>`` keys and the ``kubernetes.io/role`` value."""
    roles: set[str] = set()
    for key, value in common.mapping(common.dig(obj, "metadata", "labels")).items():
        if key.startswith(_ROLE_PREFIX) and len(key) > len(_ROLE_PREFIX):
            roles.add(key[len(_ROLE_PREFIX) :])
        elif key == _ROLE_LABEL and isinstance(value, str) and value:
            roles.add(value)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(obj: Object, address_type: str) -> str:
    for address in common.dicts(common.dig(obj, "status", "addresses")):
        if address.get("type") == address_type:
            return common.text(address.get("address"))
    return "<none>"


def node_cells(obj: Object) -> list[Any]:
    info = common.mapping(common.dig(obj, "status", "nodeInfo"))
    return [
        common.name(obj),
        node_status(obj),
        node_roles(obj),
        common.age(obj),
        common.text(info.get("kubeletVersion")),
        _node_address(obj, "InternalIP"),
        _node_address(obj, "ExternalIP"),
        common.text(info.get("osImage")) or "<unknown>",
        common.text(info.get("kernelVersion")) or "<unknown>",
        common.text(info.get("containerRuntimeVersion")) or "<unknown>",
    ]


# -- services and endpoints --------------------------------------------------------------

SERVICE_COLUMNS = [
    _NAME,
    _col("Type", "type determines how the Service is exposed."),
    _col("Cluster-IP", "clusterIP is the IP address of the service."),
    _col("External-IP", "externalIPs is a list of IP addresses for which nodes in the cluster "
         "will also accept traffic for this service."),
    _col("Port(s)", "The list of ports that are exposed by this service."),
    _AGE,
    _wide("Selector", "Route service traffic to pods with label keys and values matching this "
          "selector."),
]


def _load_balancer_ips(status: Any) -> list[str]:
    """Ingress IPs (or hostnames) of a load-balancer status, sorted and unique."""
    found = set()
    for entry in common.dicts(common.dig(status, "loadBalancer", "ingress")):
        value = common.text(entry.get("ip")) or common.text(entry.get("hostname"))
        if value:
            found.add(value)
    return sorted(found)


def service_external_ip(obj: Object) -> str:
    spec = common.mapping(obj.get("spec"))
    external = common.strings(spec.get("externalIPs"))
    svc_type = spec.get("type")
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if svc_type == "LoadBalancer":
        ips = _load_balancer_ips(obj.get("status"))
        return ",".join(ips + external) or "<pending>"
    if svc_type == "ExternalName":
        return common.text(spec.get("externalName"))
    return "<unknown>"


def service_ports(obj: Object) -> str:
    """``80/TCP``, ``80:30080/TCP`` (with a node port), ``<none>`` without ports."""
    pieces = []
    for port in common.dicts(common.dig(obj, "spec", "ports")):
        protocol = common.text(port.get("protocol"), "TCP")
        node_port = common.integer(port.get("nodePort"))
        number = common.integer(port.get("port"))
        shown = f"{number}:{node_port}" if node_port > 0 else str(number)
        pieces.append(f"{shown}/{protocol}")
    return ",".join(pieces) or "<none>"


def service_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    cluster_ips = common.strings(spec.get("clusterIPs"))
    cluster_ip = cluster_ips[0] if cluster_ips else common.text(spec.get("clusterIP"))
    return [
        common.name(obj),
        common.text(spec.get("type")),
        cluster_ip or "<none>",
        service_external_ip(obj),
        service_ports(obj),
        common.age(obj),
        common.format_labels(spec.get("selector")),
    ]


ENDPOINTS_COLUMNS = [
    _NAME,
    _col("Endpoints", "The set of all endpoints is the union of all subsets."),
    _AGE,
]


def _join_host_port(host: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: brackets around IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_endpoints(obj: Object) -> str:
    """Up to three ``ip:port`` pairs, then ``+ N more...``; ``<none>`` without subsets."""
    subsets = common.dicts(obj.get("subsets"))
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    for subset in subsets:
        ips = [common.text(a.get("ip")) for a in common.dicts(subset.get("addresses"))]
        ports = common.dicts(subset.get("ports"))
        if not ports:  # headless services may have no ports
            count += len(ips)
            shown.extend(ips)
            continue
        for port in ports:
            count += len(ips)
            number = common.integer(port.get("port"))
            shown.extend(_join_host_port(ip, number) for ip in ips)
    text = ",".join(shown[:3])
    return f"{text} + {count - 3} more..." if len(shown) > 3 else text


def endpoints_cells(obj: Object) -> list[Any]:
    return [common.name(obj), format_endpoints(obj), common.age(obj)]


# -- config and identity -----------------------------------------------------------------

CONFIGMAP_COLUMNS = [_NAME, _col("Data", "Data contains the configuration data."), _AGE]


def configmap_cells(obj: Object) -> list[Any]:
    count = common.length(obj.get("data")) + common.length(obj.get("binaryData"))
    return [common.name(obj), count, common.age(obj)]


SECRET_COLUMNS = [
    _NAME,
    _col("Type", "Used to facilitate programmatic handling of secret data."),
    _col("Data", "Data contains the secret data."),
    _AGE,
]


def secret_cells(obj: Object) -> list[Any]:
    """DATA counts keys after ``stringData`` merges into ``data``, as stored upstream."""
    keys = set(common.mapping(obj.get("data"))) | set(common.mapping(obj.get("stringData")))
    return [common.name(obj), common.text(obj.get("type")), len(keys), common.age(obj)]


SERVICE_ACCOUNT_COLUMNS = [
    _NAME,
    _col("Secrets", "Secrets is a list of the secrets in the same namespace that pods running "
         "using this ServiceAccount are allowed to use."),
    _AGE,
]


def service_account_cells(obj: Object) -> list[Any]:
    return [common.name(obj), common.length(obj.get("secrets")), common.age(obj)]


# -- volumes -----------------------------------------------------------------------------

_ACCESS_MODES = (
    ("ReadWriteOnce", "RWO"),
    ("ReadOnlyMany", "ROX"),
    ("ReadWriteMany", "RWX"),
    ("ReadWriteOncePod", "RWOP"),
)
_BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"


def access_modes(value: Any) -> str:
    """Upstream ``GetAccessModesAsString``: short forms in a fixed order, no duplicates."""
    modes = set(common.strings(value))
    return ",".join(short for mode, short in _ACCESS_MODES if mode in modes)


def _storage_class(obj: Object) -> str:
    """The beta annotation still wins over ``spec.storageClassName``, as upstream."""
    annotations = common.mapping(common.dig(obj, "metadata", "annotations"))
    if _BETA_CLASS_ANNOTATION in annotations:
        return common.text(annotations[_BETA_CLASS_ANNOTATION])
    return common.text(common.dig(obj, "spec", "storageClassName"))


def _unset(value: Any) -> str:
    return value if isinstance(value, str) else "<unset>"


PV_COLUMNS = [
    _NAME,
    _col("Capacity", "capacity is the description of the persistent volume's resources and "
         "capacity."),
    _col("Access Modes", "accessModes contains all ways the volume can be mounted."),
    _col("Reclaim Policy", "persistentVolumeReclaimPolicy defines what happens to a persistent "
         "volume when released from its claim."),
    _col("Status", "phase indicates if a volume is available, bound to a claim, or released "
         "by a claim."),
    _col("Claim", "claimRef is part of a bi-directional binding between PersistentVolume and "
         "PersistentVolumeClaim."),
    _col("StorageClass", "StorageClass of the pv"),
    _col("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
    _col("Reason", "reason is a brief CamelCase string that describes any failure."),
    _AGE,
    _wide("VolumeMode", "volumeMode defines if a volume is intended to be used with a "
          "formatted filesystem or to remain in raw block state."),
]


def pv_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    status = common.mapping(obj.get("status"))
    claim = common.mapping(spec.get("claimRef"))
    claim_ref = (
        f"{common.text(claim.get('namespace'))}/{common.text(claim.get('name'))}"
        if isinstance(spec.get("claimRef"), Mapping)
        else ""
    )
    phase = "Terminating" if common.is_deleting(obj) else common.text(status.get("phase"))
    return [
        common.name(obj),
        common.quantity(common.dig(spec, "capacity", "storage")),
        access_modes(spec.get("accessModes")),
        common.text(spec.get("persistentVolumeReclaimPolicy")),
        phase,
        claim_ref,
        _storage_class(obj),
        _unset(spec.get("volumeAttributesClassName")),
        common.text(status.get("reason")),
        common.age(obj),
        _unset(spec.get("volumeMode")),
    ]


PVC_COLUMNS = [
    _NAME,
    _col("Status", "phase represents the current phase of PersistentVolumeClaim."),
    _col("Volume", "volumeName is the binding reference to the PersistentVolume backing this "
         "claim."),
    _col("Capacity", "capacity represents the actual resources of the underlying volume."),
    _col("Access Modes", "accessModes contains the actual access modes the volume backing the "
         "PVC has."),
    _col("StorageClass", "StorageClass of the pvc"),
    _col("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
    _AGE,
    _wide("VolumeMode", "volumeMode defines what type of volume is required by the claim."),
]


def pvc_cells(obj: Object) -> list[Any]:
    """CAPACITY and ACCESS MODES come from the bound volume, so stay empty until bound."""
    spec = common.mapping(obj.get("spec"))
    status = common.mapping(obj.get("status"))
    volume = common.text(spec.get("volumeName"))
    capacity = common.quantity(common.dig(status, "capacity", "storage")) if volume else ""
    modes = access_modes(status.get("accessModes")) if volume else ""
    phase = "Terminating" if common.is_deleting(obj) else common.text(status.get("phase"))
    return [
        common.name(obj),
        phase,
        volume,
        capacity,
        modes,
        _storage_class(obj),
        _unset(spec.get("volumeAttributesClassName")),
        common.age(obj),
        _unset(spec.get("volumeMode")),
    ]


# -- quotas ------------------------------------------------------------------------------

RESOURCE_QUOTA_COLUMNS = [
    _NAME,
    _col("Request", "Request represents a minimum amount of cpu/memory that a container may "
         "consume."),
    _col("Limit", "Limits control the maximum amount of cpu/memory that a container may use "
         "independent of contention on the node."),
    _AGE,
]


def resource_quota_cells(obj: Object) -> list[Any]:
    """``used/hard`` per resource, ``limits.*`` in LIMIT and everything else in REQUEST."""
    hard = common.mapping(common.dig(obj, "status", "hard"))
    used = common.mapping(common.dig(obj, "status", "used"))
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        pieces = resource.split(".")
        target = limits if len(pieces) > 1 and pieces[0] == "limits" else requests
        target.append(
            f"{resource}: {common.quantity(used.get(resource))}/{common.quantity(hard[resource])}"
        )
    return [common.name(obj), ", ".join(requests), ", ".join(limits), common.age(obj)]


# -- controllers and templates -----------------------------------------------------------

RC_COLUMNS = [
    _NAME,
    _col("Desired", "Replicas is the number of desired replicas.", col_type="integer"),
    _col("Current", "Replicas is the most recently observed number of replicas.",
         col_type="integer"),
    _col("Ready", "The number of ready replicas for this replication controller.",
         col_type="integer"),
    _AGE,
    _wide("Containers", common.CONTAINERS_DESCRIPTION),
    _wide("Images", common.IMAGES_DESCRIPTION),
    _wide("Selector", "Selector is a label query over pods that should match the Replicas "
          "count."),
]


def rc_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    status = common.mapping(obj.get("status"))
    names, images = common.containers_and_images(common.dig(spec, "template", "spec"))
    return [
        common.name(obj),
        common.integer(spec.get("replicas"), 1),
        common.integer(status.get("replicas")),
        common.integer(status.get("readyReplicas")),
        common.age(obj),
        names,
        images,
        common.format_labels(spec.get("selector")),
    ]


POD_TEMPLATE_COLUMNS = [
    _NAME,
    _col("Containers", common.CONTAINERS_DESCRIPTION),
    _col("Images", common.IMAGES_DESCRIPTION),
    _col("Pod Labels", "The labels for the pod template."),
]


def pod_template_cells(obj: Object) -> list[Any]:
    template = common.mapping(obj.get("template"))
    names, images = common.containers_and_images(template.get("spec"))
    pod_labels = common.format_labels(common.dig(template, "metadata", "labels"))
    return [common.name(obj), names, images, pod_labels]


PRINTERS: dict[tuple[str, str], common.Printer] = {
    ("", "Namespace"): (NAMESPACE_COLUMNS, namespace_cells),
    ("", "Node"): (NODE_COLUMNS, node_cells),
    ("", "Service"): (SERVICE_COLUMNS, service_cells),
    ("", "Endpoints"): (ENDPOINTS_COLUMNS, endpoints_cells),
    ("", "ConfigMap"): (CONFIGMAP_COLUMNS, configmap_cells),
    ("", "Secret"): (SECRET_COLUMNS, secret_cells),
    ("", "ServiceAccount"): (SERVICE_ACCOUNT_COLUMNS, service_account_cells),
    ("", "PersistentVolume"): (PV_COLUMNS, pv_cells),
    ("", "PersistentVolumeClaim"): (PVC_COLUMNS, pvc_cells),
    ("", "ResourceQuota"): (RESOURCE_QUOTA_COLUMNS, resource_quota_cells),
    ("", "ReplicationController"): (RC_COLUMNS, rc_cells),
    ("", "PodTemplate"): (POD_TEMPLATE_COLUMNS, pod_template_cells),
}

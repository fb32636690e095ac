"""Columns of ``networking.k8s.io`` and ``discovery.k8s.io``: ingresses, their classes,
network policies and endpoint slices."""

from __future__ import annotations

from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

_NAME, _AGE, _col = common.NAME, common.AGE, common.column

INGRESS_COLUMNS = [
    _NAME,
    _col("Class", "The name of the IngressClass resource that should be used for additional "
         "configuration"),
    _col("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
    _col("Address", "Address is a list containing ingress points for the load-balancer"),
    _col("Ports", "Ports of TLS configurations that open"),
    _AGE,
]


def ingress_hosts(obj: Object) -> str:
    """Up to three rule hosts, ``*`` when no rule names one."""
    rules = common.dicts(common.dig(obj, "spec", "rules"))
    hosts: list[str] = []
    for rule in rules:
        if len(hosts) == 3:
            return f"{','.join(hosts)} + {len(rules) - 3} more..."
        host = common.text(rule.get("host"))
        if host:
            hosts.append(host)
    return ",".join(hosts) or "*"


def ingress_address(obj: Object) -> str:
    """Load-balancer IPs or hostnames, sorted and unique; never clipped (the server prints
    for ``-o wide`` too, where upstream does not clip)."""
    found = set()
    for entry in common.dicts(common.dig(obj, "status", "loadBalancer", "ingress")):
        value = common.text(entry.get("ip")) or common.text(entry.get("hostname"))
        if value:
            found.add(value)
    return ",".join(sorted(found))


def ingress_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    ports = "80, 443" if common.length(spec.get("tls")) else "80"
    return [
        common.name(obj),
        common.text(spec.get("ingressClassName"), "<none>"),
        ingress_hosts(obj),
        ingress_address(obj),
        ports,
        common.age(obj),
    ]


INGRESS_CLASS_COLUMNS = [
    _NAME,
    _col("Controller", "Controller that is responsible for handling this class"),
    _col("Parameters", "A reference to a resource with additional parameters"),
    _AGE,
]


def ingress_class_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    params = spec.get("parameters")
    parameters = "<none>"
    if isinstance(params, dict):
        parameters = common.text(params.get("kind"))
        if isinstance(params.get("apiGroup"), str):
            parameters += "." + params["apiGroup"]
        parameters += "/" + common.text(params.get("name"))
    return [common.name(obj), common.text(spec.get("controller")), parameters, common.age(obj)]


NETWORK_POLICY_COLUMNS = [
    _NAME,
    _col("Pod-Selector", "Selects the pods to which this NetworkPolicy object applies."),
    _AGE,
]


def network_policy_cells(obj: Object) -> list[Any]:
    """POD-SELECTOR is never nil upstream (a struct, not a pointer): missing reads as empty."""
    selector = common.dig(obj, "spec", "podSelector")
    return [
        common.name(obj),
        common.format_label_selector(selector if selector is not None else {}),
        common.age(obj),
    ]


ENDPOINT_SLICE_COLUMNS = [
    _NAME,
    _col("AddressType", "addressType specifies the type of address carried by this "
         "EndpointSlice."),
    _col("Ports", "ports specifies the list of network ports exposed by each endpoint in this "
         "slice."),
    _col("Endpoints", "endpoints is a list of unique endpoints in this slice."),
    _AGE,
]


def _slice_port(port: dict[str, Any]) -> str:
    number = port.get("port")
    if isinstance(number, int) and not isinstance(number, bool):
        return str(number)
    return common.text(port.get("name")) if port.get("name") is not None else "*"


def endpoint_slice_cells(obj: Object) -> list[Any]:
    ports = [_slice_port(dict(p)) for p in common.dicts(obj.get("ports"))]
    addresses = [
        address
        for endpoint in common.dicts(obj.get("endpoints"))
        for address in common.strings(endpoint.get("addresses"))
    ]
    return [
        common.name(obj),
        common.text(obj.get("addressType")),
        common.list_with_more(ports),
        common.list_with_more(addresses),
        common.age(obj),
    ]


PRINTERS: dict[tuple[str, str], common.Printer] = {
    ("networking.k8s.io", "Ingress"): (INGRESS_COLUMNS, ingress_cells),
    ("networking.k8s.io", "IngressClass"): (INGRESS_CLASS_COLUMNS, ingress_class_cells),
    ("networking.k8s.io", "NetworkPolicy"): (NETWORK_POLICY_COLUMNS, network_policy_cells),
    ("discovery.k8s.io", "EndpointSlice"): (ENDPOINT_SLICE_COLUMNS, endpoint_slice_cells),
}

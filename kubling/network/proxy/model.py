"""The proxy's desired state: what every Service port should route to, from API objects.

The rule renderer never looks at API objects: this module boils Services and EndpointSlices
down to small frozen values (``ServicePort``, ``Endpoint``) so that ``render`` is a pure
function that a test can feed by hand, and so that a snapshot taken on the event loop can be
rendered on a thread while the informers keep changing their caches.

Semantics follow kube-proxy (``pkg/proxy``): headless and ExternalName Services and Services
without an IPv4 cluster IP are not proxied; a Service port's target port is resolved by port
name (and protocol) in each EndpointSlice's ``ports``; an endpoint's ``ready`` and ``serving``
default to true and ``terminating`` to false, as the EndpointSlice API documents.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object

__all__ = ["DEFAULT_AFFINITY_TIMEOUT", "PROTOCOLS", "SERVICE_NAME_LABEL", "Endpoint",
           "PortsMemo", "ProxyState", "ServicePort", "build_state", "service_ports"]

#: The label that ties an EndpointSlice to its Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: ``sessionAffinityConfig.clientIP.timeoutSeconds`` when unset (3 hours, as upstream).
DEFAULT_AFFINITY_TIMEOUT = 10800
#: Kubernetes protocol → nftables ``inet_proto`` name.
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass(frozen=True, order=True)
class Endpoint:
    """One backend address of one Service port."""

    ip: str
    port: int
    node_name: str = ""
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with everything needed to program it.

    ``node_port`` 0 means none. ``affinity_timeout`` is set only for ``ClientIP`` affinity.
    ``external_local``/``internal_local`` are the two traffic policies being ``Local``.
    """

    namespace: str
    name: str
    port_name: str
    protocol: str  # "tcp" | "udp" | "sctp"
    port: int
    cluster_ips: tuple[str, ...]
    endpoints: tuple[Endpoint, ...] = ()
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    affinity_timeout: int | None = None
    external_local: bool = False
    internal_local: bool = False

    @property
    def key(self) -> str:
        """``namespace/name/protocol/port-name`` (``p<port>`` when the port is unnamed)."""
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name or f'p{self.port}'}"

    @property
    def has_external(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)


@dataclass(frozen=True)
class ProxyState:
    """Everything one sync programs: the Service ports and this node's facts."""

    services: tuple[ServicePort, ...] = ()
    node_name: str = ""
    node_ips: tuple[str, ...] = ()
    cluster_cidr: str = "10.42.0.0/16"
    masquerade_all: bool = False


def _ipv4s(values: Iterable[Any]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            continue
        if address.version == 4 and str(address) not in out:
            out.append(str(address))
    return tuple(out)


def _cluster_ips(spec: dict[str, Any]) -> tuple[str, ...]:
    ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
    return _ipv4s(ip for ip in ips if ip and ip != "None")


def _endpoint_ports(slice_: Object, name: str, protocol: str) -> int | None:
    for port in slice_.get("ports") or []:
        if (port.get("name") or "") == name and (port.get("protocol") or "TCP") == protocol:
            number = port.get("port")
            return number if isinstance(number, int) and 0 < number < 65536 else None
    return None


def _endpoints(slices: Iterable[Object], port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    """The endpoints of one Service port across its slices, one per ``ip:port``."""
    found: dict[tuple[str, int], Endpoint] = {}
    for slice_ in slices:
        if slice_.get("addressType", "IPv4") != "IPv4":
            continue
        port = _endpoint_ports(slice_, port_name, protocol)
        if port is None:
            continue
        for endpoint in slice_.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            ready = conditions.get("ready") is not False
            serving = conditions.get("serving")
            serving = ready if serving is None else bool(serving)
            terminating = bool(conditions.get("terminating"))
            for ip in _ipv4s((endpoint.get("addresses") or [])[:1]):
                candidate = Endpoint(ip, port, str(endpoint.get("nodeName") or ""),
                                     ready, serving, terminating)
                previous = found.get((ip, port))
                # The same address in two slices (a move in progress): the readier one wins.
                if previous is None or (candidate.ready, candidate.serving) > (
                        previous.ready, previous.serving):
                    found[(ip, port)] = candidate
    return tuple(sorted(found.values()))


def service_ports(service: Object, slices: Iterable[Object]) -> list[ServicePort]:
    """The proxied ports of one Service (none for headless, ExternalName or IPv6-only)."""
    spec: dict[str, Any] = service.get("spec") or {}
    svc_type = spec.get("type") or "ClusterIP"
    cluster_ips = _cluster_ips(spec)
    if svc_type == "ExternalName" or not cluster_ips:
        return []
    slices = list(slices)
    affinity: int | None = None
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    lb_ips = _ipv4s(
        ingress.get("ip") for ingress in
        ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ingress.get("ipMode", "VIP") == "VIP"
    ) if svc_type == "LoadBalancer" else ()
    out: list[ServicePort] = []
    for port in spec.get("ports") or []:
        protocol = port.get("protocol") or "TCP"
        if protocol not in PROTOCOLS or not isinstance(port.get("port"), int):
            continue
        name = port.get("name") or ""
        node_port = port.get("nodePort") if svc_type in ("NodePort", "LoadBalancer") else 0
        out.append(ServicePort(
            namespace=meta.namespace_of(service), name=meta.name_of(service), port_name=name,
            protocol=PROTOCOLS[protocol], port=port["port"], cluster_ips=cluster_ips,
            endpoints=_endpoints(slices, name, protocol),
            node_port=node_port if isinstance(node_port, int) else 0,
            external_ips=_ipv4s(spec.get("externalIPs") or []), load_balancer_ips=lb_ips,
            affinity_timeout=affinity,
            external_local=spec.get("externalTrafficPolicy") == "Local",
            internal_local=spec.get("internalTrafficPolicy") == "Local",
        ))
    return out


#: ``build_state``'s memory between calls: per Service, the objects its ports were made
#: from and those ports.
PortsMemo = dict[tuple[str, str], tuple[Object, tuple[Object, ...], list[ServicePort]]]


def _same(a: tuple[Object, ...], b: tuple[Object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def build_state(
    services: Iterable[Object],
    slices: Iterable[Object],
    *,
    node_name: str,
    node_ips: Iterable[str],
    cluster_cidr: str = "10.42.0.0/16",
    masquerade_all: bool = False,
    memo: PortsMemo | None = None,
) -> ProxyState:
    """Join Services with their EndpointSlices (by namespace and service-name label).

    With ``memo`` (owned by one caller, e.g. the proxy), a Service whose object and slice
    objects are the very ones of the previous call reuses its ports: informers replace
    objects on change and never mutate them, so identity means "unchanged", and a sync after
    one endpoint change re-reads one Service instead of all of them.
    """
    by_service: dict[tuple[str, str], list[Object]] = {}
    for slice_ in slices:
        owner = meta.labels_of(slice_).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault((meta.namespace_of(slice_), owner), []).append(slice_)
    ports: list[ServicePort] = []
    seen: set[tuple[str, str]] = set()
    for service in services:
        key = (meta.namespace_of(service), meta.name_of(service))
        own = tuple(by_service.get(key, ()))
        cached = memo.get(key) if memo is not None else None
        if cached is not None and cached[0] is service and _same(cached[1], own):
            found = cached[2]
        else:
            found = service_ports(service, own)
            if memo is not None:
                memo[key] = (service, own, found)
        seen.add(key)
        ports.extend(found)
    if memo is not None:
        for gone in memo.keys() - seen:
            del memo[gone]
    ports.sort(key=lambda p: p.key)
    return ProxyState(services=tuple(ports), node_name=node_name, node_ips=_ipv4s(node_ips),
                      cluster_cidr=cluster_cidr, masquerade_all=masquerade_all)

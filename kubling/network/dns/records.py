"""The cluster zone: DNS records computed from Services and EndpointSlices, kept in dicts.

Answering must cost a dict lookup, never an API call, so records are computed when objects
change (per Service, from the Service and its EndpointSlices) and queries only read them.
The names and their meaning follow the Kubernetes DNS specification as CoreDNS's
*kubernetes* plugin implements it (with ``pods insecure``):

- ``<svc>.<ns>.svc.<zone>``: A/AAAA for a ClusterIP service's cluster IPs; for a headless
  service one record per *ready* endpoint address (a headless service without a ready endpoint
  is NXDOMAIN, as in CoreDNS); a CNAME for an ExternalName service.
- ``<ep>.<svc>.<ns>.svc.<zone>``: each ready endpoint, ``<ep>`` its ``hostname`` (StatefulSet
  pods with a ``subdomain``) or its address with dashes (``10-42-0-5``).
- ``_<port>._<proto>.<svc>.<ns>.svc.<zone>``: SRV for named ports, priority 0, weight
  ``100 // count`` as CoreDNS divides it, targeting the service name (ClusterIP) or each
  endpoint name (headless); the service and endpoint names carry SRV for all their ports.
- PTR for cluster IPs (to the service) and endpoint addresses (to the endpoint names); a
  cluster IP wins over endpoints, as in CoreDNS.
- ``<a-b-c-d>.<ns>.pod.<zone>``: A read from the name itself, when the namespace exists.
- ``<ns>.svc.<zone>`` and ``<ns>.pod.<zone>`` exist (NODATA) exactly when the namespace does;
  the apex has SOA and NS, ``dns-version.<zone>`` the schema version in TXT.

Names are stored lower-case without the trailing dot; the resolver lower-cases queries.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from dnslib import (  # type: ignore[import-untyped,unused-ignore]
    AAAA,
    CNAME,
    NS,
    PTR,
    QTYPE,
    SOA,
    SRV,
    TXT,
    A,
)

from kubling.api import meta
from kubling.api.meta import Object

#: An rdata object of dnslib (``A``, ``SRV``, ...); dnslib is untyped.
RData = Any
#: The records of one owner name: query type → rdatas.
Node = dict[int, list[RData]]

#: The schema version of the Kubernetes DNS specification this zone follows.
SCHEMA_VERSION = "1.1.0"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_SOA_TIMES = (7200, 1800, 86400)  # refresh, retry, expire: nobody transfers this zone


def dashed(address: str) -> str:
    """``10.42.0.5`` → ``10-42-0-5``; IPv6 colons become dashes too (CoreDNS's form)."""
    return address.replace(".", "-").replace(":", "-")


def undashed(label: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a pod label names (``10-42-0-5``), or ``None`` if it names none."""
    if label.count("-") == 3 and "--" not in label:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_rdata(address: str) -> tuple[int, RData] | None:
    """(A or AAAA, rdata) for an address string; ``None`` for anything else."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 4:
        return QTYPE.A, A(str(ip))
    return QTYPE.AAAA, AAAA(str(ip))


@dataclasses.dataclass
class ServiceRecords:
    """Everything one Service contributes: its owner names and its reverse (PTR) entries.

    ``ptrs`` maps a reverse name to ``(rank, target)``; rank 0 (cluster IP) hides rank 1
    (endpoint) targets of the same address.
    """

    names: dict[str, Node] = dataclasses.field(default_factory=dict)
    ptrs: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)

    def add(self, name: str, qtype: int, rdata: RData) -> None:
        rdatas = self.names.setdefault(name, {}).setdefault(qtype, [])
        if rdata not in rdatas:
            rdatas.append(rdata)

    def add_ptr(self, address: str, rank: int, target: str) -> None:
        entries = self.ptrs.setdefault(ipaddress.ip_address(address).reverse_pointer, [])
        if (rank, target) not in entries:
            entries.append((rank, target))


@dataclasses.dataclass(frozen=True)
class _Endpoint:
    address: str
    record: tuple[int, RData]  # (A or AAAA, rdata)
    name: str  # the first label of its DNS name
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol)


def _ready_endpoints(slices: Iterable[Object]) -> list[_Endpoint]:
    """Ready endpoints of IP slices; ``conditions.ready`` unset counts as ready (the API's
    rule for consumers), FQDN slices are not addresses."""
    found: list[_Endpoint] = []
    for slice_ in slices:
        if slice_.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        ports = tuple(
            (str(p.get("name") or ""), int(p["port"]), str(p.get("protocol") or "TCP"))
            for p in slice_.get("ports") or [] if isinstance(p.get("port"), int)
        )
        for endpoint in slice_.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            hostname = endpoint.get("hostname")
            for address in endpoint.get("addresses") or []:
                record = address_rdata(address)
                if record is not None:
                    found.append(_Endpoint(address, record,
                                           str(hostname or dashed(address)).lower(), ports))
    return found


def _srv_weight(count: int) -> int:
    """CoreDNS shares 100 between the records of one priority, rounding down."""
    return max(1, 100 // max(count, 1))


def build_service(service: Object, slices: Iterable[Object], domain: str) -> ServiceRecords:
    """The records of one Service and its EndpointSlices (pure: no I/O, no shared state)."""
    spec: Mapping[str, Any] = service.get("spec") or {}
    name = f"{meta.name_of(service)}.{meta.namespace_of(service)}.svc.{domain}".lower()
    records = ServiceRecords()
    if spec.get("type") == "ExternalName":
        external = str(spec.get("externalName") or "").rstrip(".")
        if external and address_rdata(external) is None:
            records.add(name, QTYPE.CNAME, CNAME(external + "."))
        return records

    endpoints = _ready_endpoints(slices)
    for endpoint in endpoints:
        ep_name = f"{endpoint.name}.{name}"
        records.add(ep_name, *endpoint.record)
        records.add_ptr(endpoint.address, 1, ep_name)

    headless = spec.get("clusterIP") == "None"
    if headless:
        _headless_records(records, name, endpoints)
    else:
        _cluster_ip_records(records, name, spec)
    _endpoint_srv(records, name, endpoints)
    return records


def _cluster_ip_records(records: ServiceRecords, name: str, spec: Mapping[str, Any]) -> None:
    addresses = list(spec.get("clusterIPs") or [])
    if spec.get("clusterIP") and spec["clusterIP"] not in addresses:
        addresses.insert(0, spec["clusterIP"])
    for address in addresses:
        found = address_rdata(address)
        if found is not None:
            records.add(name, *found)
            records.add_ptr(address, 0, name)
    ports = [p for p in spec.get("ports") or [] if isinstance(p.get("port"), int)]
    weight = _srv_weight(len(ports))
    for port in ports:
        records.add(name, QTYPE.SRV, SRV(0, weight, port["port"], name + "."))
        if port.get("name"):  # one record per name: port names are unique in a service
            proto = str(port.get("protocol") or "TCP").lower()
            records.add(f"_{str(port['name']).lower()}._{proto}.{name}", QTYPE.SRV,
                        SRV(0, 100, port["port"], name + "."))


def _headless_records(records: ServiceRecords, name: str, endpoints: list[_Endpoint]) -> None:
    for endpoint in endpoints:
        records.add(name, *endpoint.record)
    by_srv_name: dict[str, list[tuple[int, str]]] = {}
    all_ports: list[tuple[int, str]] = []
    for endpoint in endpoints:
        target = f"{endpoint.name}.{name}."
        for port_name, port, proto in endpoint.ports:
            all_ports.append((port, target))
            if port_name:
                key = f"_{port_name.lower()}._{proto.lower()}.{name}"
                by_srv_name.setdefault(key, []).append((port, target))
    for srv_name, entries in [(name, all_ports), *by_srv_name.items()]:
        unique = list(dict.fromkeys(entries))
        weight = _srv_weight(len(unique))
        for port, target in unique:
            records.add(srv_name, QTYPE.SRV, SRV(0, weight, port, target))


def _endpoint_srv(records: ServiceRecords, name: str, endpoints: list[_Endpoint]) -> None:
    """SRV at each endpoint name for the endpoint's ports (CoreDNS answers those too)."""
    per_name: dict[str, list[int]] = {}
    for endpoint in endpoints:
        ports = per_name.setdefault(f"{endpoint.name}.{name}", [])
        ports.extend(port for _, port, _ in endpoint.ports if port not in ports)
    for ep_name, ports in per_name.items():
        weight = _srv_weight(len(ports))
        for port in ports:
            records.add(ep_name, QTYPE.SRV, SRV(0, weight, port, ep_name + "."))


@dataclasses.dataclass(frozen=True)
class Lookup:
    """The zone's answer for one name and type.

    ``exists`` False means NXDOMAIN; True with no ``answers`` means NODATA. ``additional``
    holds (owner, type, rdata) glue, e.g. the addresses of SRV targets.
    """

    exists: bool
    answers: list[tuple[int, RData]]
    additional: list[tuple[str, int, RData]] = dataclasses.field(default_factory=list)


_NXDOMAIN = Lookup(False, [])
_NODATA = Lookup(True, [])


class Zone:
    """The cluster domain plus the reverse entries of cluster addresses, updated per Service.

    ``replace_service`` swaps in a Service's records (built by :func:`build_service`);
    ``lookup`` answers a query. Both are plain dict work, so an informer handler may call
    the first and every query the second.
    """

    def __init__(self, domain: str, *, ttl: int = 5, nameservers: Iterable[str] = ()) -> None:
        self.domain = domain.strip(".").lower()
        self.ttl = ttl
        self.namespaces: set[str] = set()
        #: Bumped on every change: the SOA serial, and a key for answer caches.
        self.generation = 1
        self._by_service: dict[str, ServiceRecords] = {}
        self._names: dict[str, Node] = {}
        self._ptrs: dict[str, dict[str, list[tuple[int, str]]]] = {}
        self._suffix = "." + self.domain
        self._nameserver = f"ns.dns.{self.domain}"
        self._fixed: dict[str, Node] = {
            self.domain: {QTYPE.NS: [NS(self._nameserver + ".")]},
            f"dns-version.{self.domain}": {QTYPE.TXT: [TXT(SCHEMA_VERSION)]},
            self._nameserver: {},
            f"dns.{self.domain}": {},
            f"svc.{self.domain}": {},
            f"pod.{self.domain}": {},
        }
        for address in nameservers:
            found = address_rdata(address)
            if found is not None:
                self._fixed[self._nameserver].setdefault(found[0], []).append(found[1])

    def soa(self) -> RData:
        return SOA(self._nameserver + ".", f"hostmaster.{self.domain}.",
                   (self.generation, *_SOA_TIMES, self.ttl))

    def is_authoritative(self, name: str) -> bool:
        """True for names in the cluster domain (the reverse zones are answered only for
        addresses the zone knows; everything else there is the upstream's)."""
        return name == self.domain or name.endswith(self._suffix)

    # -- updates ------------------------------------------------------------------------
    def set_namespace(self, name: str, exists: bool) -> None:
        if exists:
            self.namespaces.add(name.lower())
        else:
            self.namespaces.discard(name.lower())
        self.generation += 1

    def replace_service(self, key: str, records: ServiceRecords | None) -> None:
        """Swap the records of Service ``key`` (``namespace/name``); ``None`` removes them."""
        old = self._by_service.pop(key, None)
        if old is not None:
            for name in old.names:
                self._names.pop(name, None)
            for reverse in old.ptrs:
                owners = self._ptrs.get(reverse)
                if owners is not None:
                    owners.pop(key, None)
                    if not owners:
                        del self._ptrs[reverse]
        if records is not None:
            self._by_service[key] = records
            self._names.update(records.names)
            for reverse, targets in records.ptrs.items():
                self._ptrs.setdefault(reverse, {})[key] = targets
        self.generation += 1

    # -- queries ------------------------------------------------------------------------
    def lookup_reverse(self, name: str) -> Lookup | None:
        """PTR targets for a reverse name the zone knows, else ``None`` (not ours)."""
        owners = self._ptrs.get(name)
        if not owners:
            return None
        entries = [entry for targets in owners.values() for entry in targets]
        best = min(rank for rank, _ in entries)
        targets = sorted({target for rank, target in entries if rank == best})
        return Lookup(True, [(QTYPE.PTR, PTR(target + ".")) for target in targets])

    def lookup(self, name: str, qtype: int) -> Lookup:
        """Answer ``name`` (lower-case, no trailing dot, inside the domain) for ``qtype``."""
        node = self._names.get(name)
        if node is None:
            node = self._fixed.get(name)
        if node is None:
            node = self._synthesized(name)
            if node is None:
                return _NXDOMAIN
        if qtype == QTYPE.SOA and name == self.domain:
            return Lookup(True, [(QTYPE.SOA, self.soa())])
        if qtype == QTYPE.ANY:
            answers = [(t, r) for t, rdatas in node.items() for r in rdatas]
        elif QTYPE.CNAME in node:
            answers = [(QTYPE.CNAME, r) for r in node[QTYPE.CNAME]]
        else:
            answers = [(qtype, r) for r in node.get(qtype, ())]
        if not answers:
            return _NODATA
        return Lookup(True, answers, self._glue(answers))

    def _synthesized(self, name: str) -> Node | None:
        """Namespaces (``<ns>.svc``, ``<ns>.pod``) and pod names, read from the name."""
        labels = name[: -len(self._suffix)].split(".")
        if len(labels) == 2 and labels[1] in ("svc", "pod") and labels[0] in self.namespaces:
            return {}
        if len(labels) == 3 and labels[2] == "pod" and labels[1] in self.namespaces:
            ip = undashed(labels[0])
            if ip is not None:
                found = address_rdata(str(ip))
                return {found[0]: [found[1]]} if found else None
        return None

    def _glue(self, answers: list[tuple[int, RData]]) -> list[tuple[str, int, RData]]:
        glue: list[tuple[str, int, RData]] = []
        seen: set[str] = set()
        for qtype, rdata in answers:
            if qtype in (QTYPE.SRV, QTYPE.NS):
                target = str(rdata.target if qtype == QTYPE.SRV else rdata.label).rstrip(".")
                if target in seen:
                    continue
                seen.add(target)
                node = self._names.get(target) or self._fixed.get(target) or {}
                for address_type in (QTYPE.A, QTYPE.AAAA):
                    glue.extend((target, address_type, r) for r in node.get(address_type, ()))
        return glue

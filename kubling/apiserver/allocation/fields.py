"""Upstream's field rules that decide what a Service needs and carry allocated values over.

Pure functions on the Service as a dict (``pkg/registry/core/service/strategy.go`` and
``storage/storage.go`` upstream): which types need a cluster IP or node ports, how the
singular ``clusterIP`` and plural ``clusterIPs`` are reconciled, which allocated values a
client that re-sends its original manifest gets to keep, and which fields are wiped when the
type changes (so that ``kubectl patch -p '{"spec":{"type":"ClusterIP"}}'`` on a NodePort
Service releases its ports instead of failing validation).
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def spec_of(svc: Obj) -> Obj:
    spec = svc.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        svc["spec"] = spec
    return spec


def ports_of(spec: Obj) -> list[Obj]:
    return [p for p in spec.get("ports") or [] if isinstance(p, dict)]


def needs_cluster_ip(svc: Obj) -> bool:
    """Every type but ExternalName has the clusterIP fields ("None" is a value too)."""
    return spec_of(svc).get("type") != "ExternalName"


def is_headless(svc: Obj) -> bool:
    return spec_of(svc).get("clusterIP") == "None"


def needs_node_ports(svc: Obj) -> bool:
    return spec_of(svc).get("type") in ("NodePort", "LoadBalancer")


def should_allocate_node_ports(svc: Obj) -> bool:
    """Whether ports without a ``nodePort`` get one (LoadBalancers may opt out)."""
    spec = spec_of(svc)
    if spec.get("type") == "NodePort":
        return True
    if spec.get("type") == "LoadBalancer":
        return spec.get("allocateLoadBalancerNodePorts", True) is not False
    return False


def needs_health_check_node_port(svc: Obj) -> bool:
    spec = spec_of(svc)
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def externally_accessible(svc: Obj) -> bool:
    spec = spec_of(svc)
    return spec.get("type") in ("NodePort", "LoadBalancer") or bool(spec.get("externalIPs"))


def cluster_ips(svc: Obj) -> list[str]:
    """The allocated addresses (not "None"), from clusterIPs or else clusterIP."""
    spec = spec_of(svc)
    ips = [ip for ip in spec.get("clusterIPs") or [] if isinstance(ip, str)]
    if not ips and isinstance(spec.get("clusterIP"), str) and spec["clusterIP"]:
        ips = [spec["clusterIP"]]
    return [ip for ip in ips if ip and ip != "None"]


def node_ports(svc: Obj) -> list[int]:
    """Every node port the Service holds: its ports' and its health-check port."""
    spec = spec_of(svc)
    found = [p["nodePort"] for p in ports_of(spec) if isinstance(p.get("nodePort"), int)
             and p["nodePort"] > 0]
    health = spec.get("healthCheckNodePort")
    if isinstance(health, int) and health > 0:
        found.append(health)
    return found


def normalize_cluster_ips(new: Obj, old: Obj | None) -> None:
    """Upstream's NormalizeClusterIPs: infer what the client meant with the linked fields."""
    spec = spec_of(new)
    ip = spec.get("clusterIP") or ""
    ips = spec.get("clusterIPs") or []
    if old is None:
        if ip and not ips:
            spec["clusterIPs"] = [ip]
        return
    old_spec = spec_of(old)
    old_ip = old_spec.get("clusterIP") or ""
    old_ips = old_spec.get("clusterIPs") or []
    if old_ips and not ips and old_ip == ip:
        # An old client that knows only the singular field patched something else.
        spec["clusterIPs"] = list(old_ips)
        ips = spec["clusterIPs"]
    if old_ip != ip:
        same = list(old_ips) == list(ips)
        if old_ip and not ip and same:
            spec.pop("clusterIPs", None)  # the client cleared it: clear on its behalf
        if ip and same:
            spec["clusterIPs"] = [ip]


def patch_allocated_values(new: Obj, old: Obj) -> None:
    """Keep what the server allocated when a client re-sends a manifest without it."""
    spec, old_spec = spec_of(new), spec_of(old)
    if needs_cluster_ip(old) and needs_cluster_ip(new):
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = list(old_spec["clusterIPs"])
    if needs_node_ports(old) and needs_node_ports(new):
        used = set(_port_node_ports(old_spec)) & set(_port_node_ports(spec))
        by_name = {p.get("name") or "": p.get("nodePort") for p in ports_of(old_spec)}
        for port in ports_of(spec):
            if not port.get("nodePort"):
                previous = by_name.get(port.get("name") or "")
                if isinstance(previous, int) and previous and previous not in used:
                    port["nodePort"] = previous
    if needs_health_check_node_port(old) and needs_health_check_node_port(new):
        if not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


def _port_node_ports(spec: Obj) -> list[int]:
    return [p["nodePort"] for p in ports_of(spec) if isinstance(p.get("nodePort"), int)
            and p["nodePort"] > 0]


def drop_type_dependent_fields(new: Obj, old: Obj) -> None:
    """Wipe what no longer applies after a type change, where the client left it as it was
    (those values were most likely allocated for it; they are released after the write)."""
    spec, old_spec = spec_of(new), spec_of(old)

    def same(name: str) -> bool:
        return spec.get(name) == old_spec.get(name)

    if needs_cluster_ip(old) and not needs_cluster_ip(new):
        if same("clusterIP") and same("clusterIPs"):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        if same("ipFamilies"):
            spec.pop("ipFamilies", None)
        if same("ipFamilyPolicy"):
            spec.pop("ipFamilyPolicy", None)
    if needs_node_ports(old) and not needs_node_ports(new):
        if _port_node_ports(spec) == _port_node_ports(old_spec) or not _port_node_ports(spec):
            for port in ports_of(spec):
                port.pop("nodePort", None)
    if (needs_health_check_node_port(old) and not needs_health_check_node_port(new)
            and same("healthCheckNodePort")):
        spec.pop("healthCheckNodePort", None)
    if old_spec.get("type") == "LoadBalancer" and spec.get("type") != "LoadBalancer":
        if same("allocateLoadBalancerNodePorts"):
            spec.pop("allocateLoadBalancerNodePorts", None)
        if same("loadBalancerClass"):
            spec.pop("loadBalancerClass", None)
    if externally_accessible(old) and not externally_accessible(new) and same(
            "externalTrafficPolicy"):
        spec.pop("externalTrafficPolicy", None)

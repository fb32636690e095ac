"""ServiceLB: ``type: LoadBalancer`` Services get the nodes' addresses, as on k3s.

k3s's ServiceLB (``pkg/cloudprovider/servicelb.go``) runs a ``svclb-*`` DaemonSet per
Service whose pods claim each Service port as a ``hostPort`` and forward it; the Service's
``status.loadBalancer.ingress`` then lists the addresses of the nodes where those pods run.
kubling keeps the observable contract and drops the pods: the service proxy already
programs ``status.loadBalancer.ingress`` IPs (``ipMode: VIP``) into nftables on every node,
so publishing the node addresses there is all it takes for ``<node-ip>:<port>`` to reach the
Service. This controller only computes that status and writes it through the API.

What k3s users rely on, kept here:

- Services with a ``spec.loadBalancerClass`` are left to the implementation that owns the
  class (the upstream service controller skips them, and k3s runs inside it).
- A node serves a Service only if every ``port``/``protocol`` of the Service is free there:
  a hostPort is claimed by one pod per node, so the first Service to claim a port keeps it
  and a later one on the same port stays ``<pending>`` with an ``UnAvailableLoadBalancer``
  event. Services that already hold an address are served first, so a port never moves
  from one Service to another while both exist; among the rest, the oldest wins.
- Node ports of every Service count as taken too: a load-balancer port equal to another
  Service's node port would hide that node port.
- Nodes labelled ``svccontroller.k3s.cattle.io/enablelb``: once any node carries the label,
  only those labelled ``true`` serve, and a Service labelled
  ``svccontroller.k3s.cattle.io/lbpool=<pool>`` only uses nodes of that pool.
- ``ExternalIP`` node addresses are published when any serving node has one, else the
  ``InternalIP`` ones; with ``externalTrafficPolicy: Local`` only nodes with a ready
  endpoint of the Service are listed.
- ``UpdatedLoadBalancer`` / ``UnAvailableLoadBalancer`` events as k3s records them.

The assignment is global (one Service's port decides another's fate), so every change to a
Service, Node or EndpointSlice re-queues the load-balancer Services and each reconcile
recomputes the whole assignment from the caches (a few dozen Services at most) and writes
its own Service's status only when it differs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import manager

__all__ = ["ENABLE_LB_LABEL", "LB_POOL_LABEL", "Assignment", "ServiceLBController", "assign",
           "ingress_for", "wants_load_balancer"]

log = logging.getLogger(__name__)

SERVICES = rest.lookup("v1", "services")
NODES = rest.lookup("v1", "nodes")
ENDPOINT_SLICES = rest.lookup("discovery.k8s.io/v1", "endpointslices")

#: k3s's node label: once any node has it, only nodes labelled "true" serve load balancers.
ENABLE_LB_LABEL = "svccontroller.k3s.cattle.io/enablelb"
#: k3s's pool label, on nodes and on the Services that should use only that pool.
LB_POOL_LABEL = "svccontroller.k3s.cattle.io/lbpool"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_Claim = tuple[str, int]  # (protocol, port)


def wants_load_balancer(service: Object) -> bool:
    """A LoadBalancer Service this controller serves: no ``loadBalancerClass``, not being
    deleted, single-stack IPv4 or dual-stack (node addresses are IPv4 here)."""
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer" or spec.get("loadBalancerClass"):
        return False
    if (service.get("metadata") or {}).get("deletionTimestamp"):
        return False
    families = spec.get("ipFamilies") or ["IPv4"]
    return "IPv4" in families


def _claims(service: Object) -> set[_Claim]:
    return {(str(p.get("protocol") or "TCP"), int(p["port"]))
            for p in (service.get("spec") or {}).get("ports") or []
            if isinstance(p.get("port"), int)}


def _node_ports(services: Iterable[Object]) -> dict[_Claim, str]:
    """Every node port in use → the ``namespace/name`` of its Service."""
    return {(str(p.get("protocol") or "TCP"), int(p["nodePort"])): informer.key_of(s)
            for s in services for p in (s.get("spec") or {}).get("ports") or []
            if isinstance(p.get("nodePort"), int) and p["nodePort"]}


def _ready(node: Object) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def _eligible_nodes(nodes: Iterable[Object]) -> list[Object]:
    """Ready nodes, narrowed to those labelled ``enablelb=true`` once any node has the label."""
    ready = [n for n in nodes if _ready(n)]
    if any(ENABLE_LB_LABEL in meta.labels_of(n) for n in ready):
        ready = [n for n in ready if meta.labels_of(n).get(ENABLE_LB_LABEL) == "true"]
    return sorted(ready, key=meta.name_of)


def _has_ingress(service: Object) -> bool:
    status = service.get("status") or {}
    return bool((status.get("loadBalancer") or {}).get("ingress"))


def _admission_order(service: Object) -> tuple[bool, str, str, str]:
    """Services already holding an address first (their ports stay theirs), then oldest."""
    md = service.get("metadata") or {}
    return (not _has_ingress(service), str(md.get("creationTimestamp") or ""),
            meta.namespace_of(service), meta.name_of(service))


@dataclasses.dataclass(frozen=True)
class Assignment:
    """Which nodes serve one Service, and when none can, why (for the event)."""

    nodes: tuple[str, ...] = ()
    reason: str = ""


def assign(services: Iterable[Object], nodes: Iterable[Object]) -> dict[str, Assignment]:
    """The nodes serving each wanted load-balancer Service, by ``namespace/name``.

    Pure: the caches in, the decision out. A node serves a Service when it is eligible (and
    in the Service's pool) and none of the Service's ports is claimed there by a Service
    admitted before it or used as a node port.
    """
    services = list(services)
    eligible = _eligible_nodes(nodes)
    node_ports = _node_ports(services)
    taken: dict[str, dict[_Claim, str]] = {meta.name_of(n): {} for n in eligible}
    result: dict[str, Assignment] = {}
    for service in sorted((s for s in services if wants_load_balancer(s)),
                          key=_admission_order):
        key = informer.key_of(service)
        claims = _claims(service)
        pool = meta.labels_of(service).get(LB_POOL_LABEL)
        candidates = [n for n in eligible
                      if not pool or meta.labels_of(n).get(LB_POOL_LABEL) == pool]
        serving: list[str] = []
        conflicts: dict[_Claim, str] = {}
        for node in candidates:
            name = meta.name_of(node)
            clash = {c: taken[name][c] for c in claims if c in taken[name]}
            clash.update({c: f"the node port of service {node_ports[c]}" for c in claims
                          if node_ports.get(c, key) != key})
            if clash:
                conflicts.update(clash)
                continue
            serving.append(name)
            taken[name].update(dict.fromkeys(claims, f"service {key}"))
        reason = ""
        if not serving:
            if not candidates:
                reason = "no ready node can serve load balancers"
                if pool:
                    reason += f" in pool {pool!r}"
            else:
                reason = "; ".join(f"port {port}/{proto} is used by {owner}"
                                   for (proto, port), owner in sorted(conflicts.items()))
        result[key] = Assignment(tuple(serving), reason)
    return result


def _local_nodes(slices: Iterable[Object]) -> set[str]:
    """Nodes with a ready endpoint in ``slices`` (for ``externalTrafficPolicy: Local``)."""
    found: set[str] = set()
    for slice_ in slices:
        for endpoint in slice_.get("endpoints") or []:
            ready = (endpoint.get("conditions") or {}).get("ready")
            if ready is not False and endpoint.get("nodeName"):
                found.add(str(endpoint["nodeName"]))
    return found


def ingress_for(service: Object, assignment: Assignment, nodes: dict[str, Object],
                slices: Iterable[Object]) -> list[dict[str, Any]]:
    """``status.loadBalancer.ingress`` for ``service``: the serving nodes' IPv4 addresses,
    ExternalIP ones when any node has them, else InternalIP; sorted; ``ipMode: VIP`` (what
    the API server defaults since 1.30, written here so the proxy reads it either way)."""
    serving = list(assignment.nodes)
    if (service.get("spec") or {}).get("externalTrafficPolicy") == "Local":
        local = _local_nodes(slices)
        serving = [n for n in serving if n in local]
    external: set[str] = set()
    internal: set[str] = set()
    for name in serving:
        for address in ((nodes.get(name) or {}).get("status") or {}).get("addresses") or []:
            value = str(address.get("address") or "")
            try:
                if ipaddress.ip_address(value).version != 4:
                    continue
            except ValueError:
                continue
            if address.get("type") == "ExternalIP":
                external.add(value)
            elif address.get("type") == "InternalIP":
                internal.add(value)
    chosen = external or internal
    return [{"ip": ip, "ipMode": "VIP"}
            for ip in sorted(chosen, key=lambda a: ipaddress.ip_address(a).packed)]


def _ingress_text(ingress: Iterable[dict[str, Any]]) -> str:
    return "[" + " ".join(str(i.get("ip") or i.get("hostname") or "") for i in ingress) + "]"


def _service_of_slice(slice_: Object) -> str | None:
    name = meta.labels_of(slice_).get(SERVICE_NAME_LABEL)
    return f"{meta.namespace_of(slice_)}/{name}" if name else None


class ServiceLBController:
    """Writes ``status.loadBalancer`` of the LoadBalancer Services it serves."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.services_api = ctx.client.resource(SERVICES)
        self.recorder: events.EventRecorder = ctx.recorder_for("service-lb-controller")
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="servicelb",
                                                                   clock=ctx.clock)
        self.services = ctx.informers.informer(SERVICES)
        self.nodes = ctx.informers.informer(NODES)
        self.slices = ctx.informers.informer(ENDPOINT_SLICES)
        #: Why each pending Service was last reported unavailable (one event per reason).
        self._warned: dict[str, str] = {}
        self.services.add_event_handler(on_add=self._service_changed,
                                        on_update=lambda old, new: self._service_changed(new),
                                        on_delete=self._service_changed)
        self.nodes.add_event_handler(on_add=self._enqueue_all,
                                     on_update=lambda old, new: self._enqueue_all(new),
                                     on_delete=self._enqueue_all)
        self.slices.add_event_handler(on_add=self._slice_changed,
                                      on_update=lambda old, new: self._slice_changed(new),
                                      on_delete=self._slice_changed)

    def _enqueue_all(self, _obj: Object | None = None) -> None:
        """Every Service that is or was ours: a change anywhere may move a port."""
        for service in self.services.indexer.list():
            spec = service.get("spec") or {}
            if spec.get("type") == "LoadBalancer" or _has_ingress(service):
                self.queue.add(informer.key_of(service))

    def _service_changed(self, service: Object) -> None:
        self.queue.add(informer.key_of(service))
        self._enqueue_all()

    def _slice_changed(self, slice_: Object) -> None:
        key = _service_of_slice(slice_)
        if key is None:
            return
        service = self.services.indexer.get(key)
        if service is not None and wants_load_balancer(service) and (
                (service.get("spec") or {}).get("externalTrafficPolicy") == "Local"):
            self.queue.add(key)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    async def reconcile(self, key: str) -> None:
        service = self.services.indexer.get(key)
        if service is None:
            self._warned.pop(key, None)
            return
        spec = service.get("spec") or {}
        if wants_load_balancer(service):
            assignment = assign(self.services.indexer.list(), self.nodes.indexer.list())[key]
            nodes = {meta.name_of(n): n for n in self.nodes.indexer.list()}
            namespace, name = informer.split_key(key)
            slices = [s for s in self.slices.indexer.by_index(informer.NAMESPACE_INDEX,
                                                                namespace)
                      if meta.labels_of(s).get(SERVICE_NAME_LABEL) == name]
            ingress = ingress_for(service, assignment, nodes, slices)
        elif spec.get("type") != "LoadBalancer":
            # No longer a load balancer: what we published must go (upstream's service
            # controller clears it too). Another class's status is its owner's business.
            assignment, ingress = Assignment(), []
        else:
            return
        await self._write(service, ingress, assignment)

    async def _write(self, service: Object, ingress: list[dict[str, Any]],
                     assignment: Assignment) -> None:
        status = service.get("status") or {}
        before = (status.get("loadBalancer") or {}).get("ingress") or []
        key = informer.key_of(service)
        if before == ingress:
            if not ingress and wants_load_balancer(service):
                self._warn_unavailable(service, assignment)
            return
        updated = {**service, "status": {**status, "loadBalancer": (
            {"ingress": ingress} if ingress else {})}}
        try:
            await self.services_api.update_status(updated)
        except rest.ApiError as err:
            if rest.is_not_found(err):
                return
            raise  # a conflict: the newer Service comes back through the informer
        if ingress:
            self._warned.pop(key, None)
            self.recorder.record(service, events.NORMAL, "UpdatedLoadBalancer",
                                 f"Updated LoadBalancer with new IPs: {_ingress_text(before)}"
                                 f" -> {_ingress_text(ingress)}")
        elif wants_load_balancer(service):
            self._warn_unavailable(service, assignment)

    def _warn_unavailable(self, service: Object, assignment: Assignment) -> None:
        """One ``UnAvailableLoadBalancer`` event per Service and reason (not per resync)."""
        key = informer.key_of(service)
        if self._warned.get(key) == assignment.reason:
            return
        self._warned[key] = assignment.reason
        message = "There are no available nodes for LoadBalancer"
        if assignment.reason:
            message += f": {assignment.reason}"
        self.recorder.record(service, events.WARNING, "UnAvailableLoadBalancer", message)

"""The endpoints controller: one ``Endpoints`` object per Service with a selector.

Upstream's ``pkg/controller/endpoint``: the Endpoints of a Service list the IPs of the pods
its selector matches, ready ones under ``addresses`` and the others under
``notReadyAddresses`` (all under ``addresses`` with ``publishNotReadyAddresses``), grouped
into subsets of addresses that share the same resolved ports (a named ``targetPort``
resolves per pod, so pods may differ). Services without a selector (``default/kubernetes``,
or a user's manual Endpoints) are left alone; when a Service goes, its Endpoints go too.

The module also holds what the EndpointSlice controller shares with this one: which pods
belong in endpoints, how a port resolves, which pods a Service selects, and ``WriteTracker``,
which keeps a reconcile from acting on a cache older than the controller's own last write
(upstream's stale-endpoints tracker) -- otherwise a quick second change could be compared
against the state before the first write and wrongly found "already done".
"""

from __future__ import annotations

import copy
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.client import clock as clocks
from kubling.client import informer, rest, workqueue
from kubling.controllers import manager, podcontrol

log = logging.getLogger(__name__)

SERVICES = rest.lookup("v1", "services")
PODS = rest.lookup("v1", "pods")
ENDPOINTS = rest.lookup("v1", "endpoints")

HEADLESS_LABEL = "service.kubernetes.io/headless"
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
#: Upstream truncates an Endpoints object at this many addresses (EndpointSlices scale).
MAX_ENDPOINTS_ADDRESSES = 1000

# -- what the endpoints and endpointslice controllers share ------------------------------


def pod_ips(pod: Object) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict)
           and p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return ips


def should_pod_be_in_endpoints(pod: Object, *, include_terminating: bool) -> bool:
    """Running-or-pending pods with an IP; terminating ones only when asked for."""
    if podcontrol.is_pod_terminal(pod):
        return False
    if not pod_ips(pod):
        return False
    return include_terminating or not (pod.get("metadata") or {}).get("deletionTimestamp")


def ip_family(address: str) -> str:
    """``IPv4`` or ``IPv6`` (the EndpointSlice ``addressType`` of an address)."""
    try:
        return "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"
    except ValueError:
        return "IPv4"


def service_families(service: Object) -> list[str]:
    """The IP families a Service's endpoints are in: ``spec.ipFamilies``, else its
    cluster IP's family, else IPv4."""
    spec = service.get("spec") or {}
    families = [f for f in spec.get("ipFamilies") or [] if f in ("IPv4", "IPv6")]
    if families:
        return families
    cluster_ip = spec.get("clusterIP")
    if isinstance(cluster_ip, str) and cluster_ip not in ("", "None"):
        return [ip_family(cluster_ip)]
    return ["IPv4"]


def pod_ip_in_family(pod: Object, family: str) -> str | None:
    for address in pod_ips(pod):
        if ip_family(address) == family:
            return address
    return None


def find_port(pod: Object, service_port: Object) -> int | None:
    """The container port a service port's ``targetPort`` means for this pod: a number as
    it is, a name looked up among the pod's (and its sidecars') ports of the same protocol.
    ``None`` when the name is not there (upstream ``podutil.FindPort``)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or []
                   if isinstance(c, dict) and c.get("restartPolicy") == "Always"]
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                value = port.get("containerPort")
                return value if isinstance(value, int) else None
    return None


def endpoint_port(service_port: Object, number: int) -> Object:
    port: Object = {"port": number, "protocol": service_port.get("protocol") or "TCP"}
    if service_port.get("name"):
        port["name"] = service_port["name"]
    if service_port.get("appProtocol"):
        port["appProtocol"] = service_port["appProtocol"]
    return port


def resolved_ports(service: Object, pod: Object) -> list[Object] | None:
    """The pod's endpoint ports for the service's ports; ``None`` when the service has ports
    but none resolves for this pod (it then has no endpoint)."""
    ports = (service.get("spec") or {}).get("ports") or []
    resolved = []
    for service_port in ports:
        number = find_port(pod, service_port)
        if number is None:
            log.debug("service %s/%s: port %s does not resolve for pod %s",
                      meta.namespace_of(service), meta.name_of(service),
                      service_port.get("name") or service_port.get("port"), meta.name_of(pod))
            continue
        resolved.append(endpoint_port(service_port, number))
    if ports and not resolved:
        return None
    return resolved


def service_selector(service: Object) -> labels.Selector | None:
    """The pod selector of a Service, or ``None`` for a selector-less one (whose endpoints
    someone else manages)."""
    raw = (service.get("spec") or {}).get("selector")
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        return labels.selector_from_set(raw)
    except labels.SelectorError:
        return None


def selected_pods(pods: informer.Informer, service: Object) -> list[Object]:
    selector = service_selector(service)
    if selector is None:
        return []
    found = [p for p in pods.indexer.by_index(informer.NAMESPACE_INDEX, meta.namespace_of(service))
             if selector.matches(meta.labels_of(p))]
    return sorted(found, key=meta.name_of)


def target_ref(pod: Object) -> Object:
    md = pod.get("metadata") or {}
    return {"kind": "Pod", "namespace": md.get("namespace", ""), "name": md.get("name", ""),
            "uid": md.get("uid", "")}


def hostname_for(service: Object, pod: Object) -> str:
    """A pod's hostname is published when its ``subdomain`` is the Service's name."""
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == meta.name_of(service) \
            and meta.namespace_of(pod) == meta.namespace_of(service):
        return str(spec["hostname"])
    return ""


def is_headless(service: Object) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def _pod_signature(pod: Object) -> tuple[Any, ...]:
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    return (md.get("labels"), bool(md.get("deletionTimestamp")), pod_ips(pod),
            podcontrol.is_pod_ready(pod), (pod.get("status") or {}).get("phase"),
            spec.get("nodeName"), spec.get("hostname"), spec.get("subdomain"))


class PodServiceMapper:
    """Turns pod events into the keys of the Services that select the pod (old or new
    labels), for the two endpoints controllers' informer handlers."""

    def __init__(self, services: informer.Informer, queue: workqueue.WorkQueue[str]) -> None:
        self.services = services
        self.queue = queue

    def _enqueue_for(self, *pods: Object) -> None:
        namespace = meta.namespace_of(pods[0])
        for service in self.services.indexer.by_index(informer.NAMESPACE_INDEX, namespace):
            selector = service_selector(service)
            if selector is not None and any(selector.matches(meta.labels_of(p)) for p in pods):
                self.queue.add(informer.key_of(service))

    def on_add(self, pod: Object) -> None:
        self._enqueue_for(pod)

    def on_update(self, old: Object, new: Object) -> None:
        if _pod_signature(old) != _pod_signature(new):
            self._enqueue_for(old, new)

    def on_delete(self, pod: Object) -> None:
        self._enqueue_for(pod)


def _revision(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


class WriteTracker:
    """The controller's own recent writes per key, until its informer has seen them.

    ``wrote`` records the resourceVersion a write returned and ``deleted`` a name deleted;
    ``caught_up`` says whether the informer's cache is at least that new. Revisions are
    compared as numbers (kubling's and etcd's are); expectations that never come true (a
    write someone else undid before the watch delivered it) expire after ``timeout``.
    """

    def __init__(self, source: informer.Informer, clock: clocks.Clock, *,
                 timeout: float = 30.0) -> None:
        self.source = source
        self.clock = clock
        self.timeout = timeout
        self._revisions: dict[str, tuple[int, float]] = {}
        self._deleted: dict[str, dict[str, float]] = {}

    def wrote(self, key: str, result: Object) -> None:
        revision = _revision((result.get("metadata") or {}).get("resourceVersion"))
        if revision is None:
            return
        current = self._revisions.get(key)
        if current is None or current[0] < revision:
            self._revisions[key] = (revision, self.clock.monotonic())

    def deleted(self, key: str, cache_key: str) -> None:
        self._deleted.setdefault(key, {})[cache_key] = self.clock.monotonic()

    def caught_up(self, key: str) -> bool:
        now = self.clock.monotonic()
        expected = self._revisions.get(key)
        if expected is not None:
            seen = _revision(self.source.resource_version)
            if seen is None or seen >= expected[0] or now - expected[1] > self.timeout:
                del self._revisions[key]
            else:
                return False
        gone = self._deleted.get(key)
        if gone:
            for cache_key, since in list(gone.items()):
                if cache_key not in self.source.indexer or now - since > self.timeout:
                    del gone[cache_key]
            if gone:
                return False
            del self._deleted[key]
        return True

    def forget(self, key: str) -> None:
        self._revisions.pop(key, None)
        self._deleted.pop(key, None)


#: A reconcile that finds the cache behind its own last write looks again this soon (the
#: informer event that catches it up also queues the key).
STALE_RETRY = 0.5


# -- the Endpoints controller ------------------------------------------------------------


def _sorted_addresses(addresses: Iterable[Object]) -> list[Object]:
    return sorted(addresses, key=lambda a: (a.get("ip", ""), (a.get("targetRef") or {})
                                            .get("uid", "")))


def port_key(ports: list[Object]) -> tuple[tuple[str, int, str, str], ...]:
    return tuple(sorted((p.get("name", ""), p["port"], p["protocol"], p.get("appProtocol", ""))
                        for p in ports))


def desired_subsets(service: Object, pods: list[Object]) -> tuple[list[Object], bool]:
    """The Endpoints ``subsets`` of a Service, and whether they were truncated at
    ``MAX_ENDPOINTS_ADDRESSES``."""
    spec = service.get("spec") or {}
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    family = service_families(service)[0]
    groups: dict[tuple[Any, ...], tuple[list[Object], list[Object], list[Object]]] = {}
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, include_terminating=publish_not_ready):
            continue
        ip = pod_ip_in_family(pod, family)
        if ip is None:
            continue
        ports = resolved_ports(service, pod)
        if ports is None or (not ports and not is_headless(service)):
            continue
        address: Object = {"ip": ip}
        if hostname := hostname_for(service, pod):
            address["hostname"] = hostname
        if node_name := (pod.get("spec") or {}).get("nodeName"):
            address["nodeName"] = node_name
        address["targetRef"] = target_ref(pod)
        ready, not_ready, _ = groups.setdefault(port_key(ports), ([], [], ports))
        (ready if publish_not_ready or podcontrol.is_pod_ready(pod) else not_ready).append(address)
    subsets = []
    total = 0
    truncated = False
    for key in sorted(groups):
        ready, not_ready, ports = groups[key]
        room = max(0, MAX_ENDPOINTS_ADDRESSES - total)
        ready_kept = _sorted_addresses(ready)[:room]
        not_ready_kept = _sorted_addresses(not_ready)[:max(0, room - len(ready_kept))]
        truncated |= len(ready_kept) + len(not_ready_kept) < len(ready) + len(not_ready)
        total += len(ready_kept) + len(not_ready_kept)
        if not ready_kept and not not_ready_kept:
            continue
        subset: Object = {}
        if ready_kept:
            subset["addresses"] = ready_kept
        if not_ready_kept:
            subset["notReadyAddresses"] = not_ready_kept
        if ports:
            subset["ports"] = sorted(ports, key=lambda p: (p.get("name", ""), p["port"]))
        subsets.append(subset)
    return subsets, truncated


def desired_labels(service: Object) -> dict[str, str]:
    wanted = {k: v for k, v in meta.labels_of(service).items() if k != HEADLESS_LABEL}
    if is_headless(service):
        wanted[HEADLESS_LABEL] = ""
    return wanted


class EndpointsController:
    """Keeps ``Endpoints`` in step with the pods each selector-bearing Service selects."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.client = ctx.client
        self.endpoints_api = ctx.client.resource(ENDPOINTS)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="endpoints",
                                                                   clock=ctx.clock)
        self.services = ctx.informers.informer(SERVICES)
        self.pods = ctx.informers.informer(PODS)
        self.endpoints = ctx.informers.informer(ENDPOINTS)
        self.tracker = WriteTracker(self.endpoints, ctx.clock)
        self.services.add_event_handler(
            on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
            on_delete=self._enqueue)
        mapper = PodServiceMapper(self.services, self.queue)
        self.pods.add_event_handler(on_add=mapper.on_add, on_update=mapper.on_update,
                                    on_delete=mapper.on_delete)
        # An Endpoints write of ours (or anyone's) re-checks its Service, if there is one;
        # a deleted Endpoints is put back.
        self.endpoints.add_event_handler(
            on_add=self._endpoints_changed,
            on_update=lambda old, new: self._endpoints_changed(new),
            on_delete=self._enqueue)

    def _enqueue(self, obj: Object) -> None:
        self.queue.add(informer.key_of(obj))

    def _endpoints_changed(self, obj: Object) -> None:
        key = informer.key_of(obj)
        if key in self.services.indexer:
            self.queue.add(key)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    async def reconcile(self, key: str) -> float | None:
        namespace, name = informer.split_key(key)
        service = self.services.indexer.get(key)
        if service is None:
            # Deleted even when the cache has not seen it yet: a just-created Endpoints
            # must not outlive its Service.
            self.tracker.forget(key)
            try:
                await self.endpoints_api.delete(name, namespace=namespace)
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise
            return None
        if service_selector(service) is None:
            return None
        if not self.tracker.caught_up(key):
            return STALE_RETRY
        subsets, truncated = desired_subsets(service, selected_pods(self.pods, service))
        wanted_labels = desired_labels(service)
        current = self.endpoints.indexer.get(key)
        if current is None:
            body: Object = {"apiVersion": "v1", "kind": "Endpoints",
                            "metadata": {"name": name, "namespace": namespace,
                                         "labels": wanted_labels}}
            if truncated:
                body["metadata"]["annotations"] = {OVER_CAPACITY: "truncated"}
            if subsets:
                body["subsets"] = subsets
            self.tracker.wrote(key, await self.endpoints_api.create(body, namespace=namespace))
            return None
        annotations = dict((current.get("metadata") or {}).get("annotations") or {})
        if truncated:
            annotations[OVER_CAPACITY] = "truncated"
        else:
            annotations.pop(OVER_CAPACITY, None)
        if (current.get("subsets") or []) == subsets and meta.labels_of(current) == wanted_labels \
                and ((current.get("metadata") or {}).get("annotations") or {}) == annotations:
            return None
        updated = copy.deepcopy(current)
        md = meta.metadata(updated)
        md["labels"] = wanted_labels
        md["annotations"] = annotations
        if not annotations:
            md.pop("annotations")
        updated["subsets"] = subsets
        self.tracker.wrote(key, await self.endpoints_api.update(updated, namespace=namespace))
        return None


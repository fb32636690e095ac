"""The EndpointSlice controller: the scalable form of a Service's endpoints.

Upstream's ``pkg/controller/endpointslice``: for every Service with a selector it keeps
EndpointSlices (named ``<service>-<5 random>`` through ``generateName``, labelled
``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by``, owned by the
Service) holding at most ``max_endpoints_per_slice`` endpoints each, one set per IP family
of the Service and per distinct set of resolved ports. Each endpoint carries the pod's
``ready``/``serving``/``terminating`` conditions, ``nodeName`` and ``targetRef``;
terminating pods stay in (``terminating: true``) so that proxies can drain them.

Reconciling keeps churn low as upstream's reconciler does: an endpoint stays in the slice it
is in; only slices whose endpoints changed are rewritten; new endpoints fill rewritten
slices first, then an unchanged slice with room for all of them, then new slices; a slice
about to be deleted is reused instead of creating one. A Service with no endpoints keeps one
empty placeholder slice. Slices are created, then updated, then deleted, so that endpoints
never vanish between two writes.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import informer, rest, workqueue
from kubling.controllers import endpoints as ep
from kubling.controllers import manager, podcontrol

log = logging.getLogger(__name__)

ENDPOINT_SLICES = rest.lookup("discovery.k8s.io/v1", "endpointslices")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
#: Upstream's ``--max-endpoints-per-slice`` default.
MAX_ENDPOINTS_PER_SLICE = 100

_SERVICE_INDEX = "endpointslice-controller/service"

_GroupKey = tuple[str, tuple[Any, ...]]


def _managed_service_key(slice_: Object) -> str | None:
    """``namespace/service`` of a slice this controller manages, else ``None``."""
    slice_labels = meta.labels_of(slice_)
    service = slice_labels.get(SERVICE_NAME_LABEL)
    if not service or slice_labels.get(MANAGED_BY_LABEL) != CONTROLLER_NAME:
        return None
    return f"{meta.namespace_of(slice_)}/{service}"


def _service_index(slice_: Object) -> list[str]:
    key = _managed_service_key(slice_)
    return [key] if key else []


def _endpoint_key(endpoint: Object) -> str:
    uid = (endpoint.get("targetRef") or {}).get("uid")
    if uid:
        return f"uid:{uid}"
    return "ip:" + ",".join(endpoint.get("addresses") or [])


def _address_order(endpoint: Object) -> tuple[Any, ...]:
    addresses = endpoint.get("addresses") or [""]
    try:
        return (0, ipaddress.ip_address(addresses[0]).packed)
    except ValueError:
        return (1, str(addresses[0]).encode())


def _slice_ports(slice_: Object) -> list[Object]:
    return [{**p, "name": p.get("name") or ""} for p in slice_.get("ports") or []]


def _group_of(slice_: Object) -> _GroupKey:
    return str(slice_.get("addressType") or "IPv4"), ep.port_key(_slice_ports(slice_))


def desired_endpoint(service: Object, pod: Object, address: str) -> Object:
    publish_not_ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    serving = publish_not_ready or podcontrol.is_pod_ready(pod)
    endpoint: Object = {
        "addresses": [address],
        "conditions": {"ready": publish_not_ready or (serving and not terminating),
                       "serving": serving, "terminating": terminating},
    }
    if hostname := ep.hostname_for(service, pod):
        endpoint["hostname"] = hostname
    if node_name := (pod.get("spec") or {}).get("nodeName"):
        endpoint["nodeName"] = node_name
    endpoint["targetRef"] = ep.target_ref(pod)
    return endpoint


def desired_endpoints(service: Object, pods: list[Object]
                      ) -> dict[_GroupKey, tuple[list[Object], dict[str, Object]]]:
    """(addressType, ports) → (the slice ports, endpoints by key)."""
    groups: dict[_GroupKey, tuple[list[Object], dict[str, Object]]] = {}
    families = ep.service_families(service)
    for pod in pods:
        if not ep.should_pod_be_in_endpoints(pod, include_terminating=True):
            continue
        ports = ep.resolved_ports(service, pod)
        if ports is None:
            continue
        slice_ports = [{**p, "name": p.get("name", "")} for p in ports]
        for family in families:
            address = ep.pod_ip_in_family(pod, family)
            if address is None:
                continue
            endpoint = desired_endpoint(service, pod, address)
            _, found = groups.setdefault((family, ep.port_key(slice_ports)), (slice_ports, {}))
            found[_endpoint_key(endpoint)] = endpoint
    return groups


def _slice_labels(service: Object) -> dict[str, str]:
    wanted = ep.desired_labels(service)
    wanted[SERVICE_NAME_LABEL] = meta.name_of(service)
    wanted[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return wanted


def _owner_ref(service: Object) -> Object:
    return podcontrol.controller_ref(service, api_version="v1", kind="Service")


def _owned_by(slice_: Object, service: Object) -> bool:
    uid = (service.get("metadata") or {}).get("uid")
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in (slice_.get("metadata") or {}).get("ownerReferences") or [])


class _Plan:
    """The writes one reconcile makes: slices to create, rewrite and delete."""

    def __init__(self) -> None:
        self.create: list[tuple[str, list[Object], list[Object]]] = []  # (type, ports, eps)
        self.update: list[tuple[Object, list[Object], list[Object]]] = []  # (slice, ports, eps)
        self.delete: list[Object] = []
        self.unchanged: list[Object] = []

    def endpoint_count(self) -> int:
        return (sum(len(e) for _, _, e in self.create) + sum(len(e) for _, _, e in self.update)
                + sum(len(s.get("endpoints") or []) for s in self.unchanged))


def plan(service: Object, pods: list[Object], existing: list[Object], *,
         max_per_slice: int) -> _Plan:
    """Decide the writes that bring ``existing`` slices to the Service's endpoints."""
    result = _Plan()
    wanted_labels = _slice_labels(service)
    desired = desired_endpoints(service, pods)
    by_group: dict[_GroupKey, list[Object]] = {}
    for slice_ in sorted(existing, key=meta.name_of):
        if not _owned_by(slice_, service):
            result.delete.append(slice_)
        else:
            by_group.setdefault(_group_of(slice_), []).append(slice_)
    for group in sorted(set(desired) | set(by_group)):
        ports, wanted = desired.get(group, ([], {}))
        ports = ports or (_slice_ports(by_group[group][0]) if group in by_group else [])
        wanted = dict(wanted)
        rewrites: list[tuple[Object, list[Object]]] = []
        kept: list[Object] = []
        for slice_ in by_group.get(group, []):
            new_endpoints: list[Object] = []
            changed = group not in desired or meta.labels_of(slice_) != wanted_labels
            for endpoint in slice_.get("endpoints") or []:
                desired_one = wanted.pop(_endpoint_key(endpoint), None)
                if desired_one is None:
                    changed = True
                    continue
                changed |= desired_one != endpoint
                new_endpoints.append(desired_one)
            if changed:
                rewrites.append((slice_, new_endpoints))
            else:
                kept.append(slice_)
        leftover = sorted(wanted.values(), key=_address_order)
        for _, new_endpoints in rewrites:
            room = max(0, max_per_slice - len(new_endpoints))
            new_endpoints.extend(leftover[:room])
            leftover = leftover[room:]
        if leftover:
            for slice_ in kept:
                if len(slice_.get("endpoints") or []) + len(leftover) <= max_per_slice:
                    kept.remove(slice_)
                    rewrites.append((slice_, list(slice_.get("endpoints") or []) + leftover))
                    leftover = []
                    break
        while leftover:
            result.create.append((group[0], ports, leftover[:max_per_slice]))
            leftover = leftover[max_per_slice:]
        result.unchanged += kept
        for slice_, new_endpoints in rewrites:
            if new_endpoints:
                result.update.append((slice_, ports, new_endpoints))
            else:
                result.delete.append(slice_)
    _placeholder(service, result, wanted_labels)
    _reuse_deleted(result)
    return result


def _placeholder(service: Object, result: _Plan, wanted_labels: dict[str, str]) -> None:
    """A Service with no endpoints keeps exactly one empty slice (upstream's placeholder),
    so that consumers can tell "no endpoints" from "not processed yet"."""
    if result.endpoint_count():
        return
    family = ep.service_families(service)[0]
    candidates = [s for s in result.unchanged + result.delete + [u for u, _, _ in result.update]
                  if _owned_by(s, service) and _group_of(s) == (family, ())
                  and not s.get("endpoints")]
    keep = candidates[0] if candidates else None
    everything = result.unchanged + result.delete + [u for u, _, _ in result.update]
    result.unchanged, result.update, result.create = [], [], []
    result.delete = [s for s in everything if s is not keep]
    if keep is None:
        result.create.append((family, [], []))
    elif meta.labels_of(keep) != wanted_labels:
        result.update.append((keep, [], []))
    else:
        result.unchanged.append(keep)


def _reuse_deleted(result: _Plan) -> None:
    """Turn a create plus a delete of the same address type into one update."""
    creates = []
    for address_type, ports, endpoints in result.create:
        reusable = next((s for s in result.delete
                         if s.get("addressType") == address_type), None)
        if reusable is None:
            creates.append((address_type, ports, endpoints))
            continue
        result.delete.remove(reusable)
        result.update.append((reusable, ports, endpoints))
    result.create = creates


class EndpointSliceController:
    """Keeps the EndpointSlices of every selector-bearing Service in step with its pods."""

    def __init__(self, ctx: manager.ControllerContext, *,
                 max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> None:
        self.max_endpoints_per_slice = max_endpoints_per_slice
        self.slices_api = ctx.client.resource(ENDPOINT_SLICES)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="endpointslice",
                                                                   clock=ctx.clock)
        self.services = ctx.informers.informer(ep.SERVICES)
        self.pods = ctx.informers.informer(ep.PODS)
        self.slices = ctx.informers.informer(ENDPOINT_SLICES)
        self.slices.indexer.add_index(_SERVICE_INDEX, _service_index, exist_ok=True)
        self.tracker = ep.WriteTracker(self.slices, ctx.clock)
        self.services.add_event_handler(
            on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
            on_delete=self._enqueue)
        mapper = ep.PodServiceMapper(self.services, self.queue)
        self.pods.add_event_handler(on_add=mapper.on_add, on_update=mapper.on_update,
                                    on_delete=mapper.on_delete)
        self.slices.add_event_handler(
            on_add=self._slice_changed,
            on_update=lambda old, new: self._slice_changed(old, new),
            on_delete=self._slice_changed)

    def _enqueue(self, obj: Object) -> None:
        self.queue.add(informer.key_of(obj))

    def _slice_changed(self, *slices: Object) -> None:
        for slice_ in slices:
            key = _managed_service_key(slice_)
            if key is not None:
                self.queue.add(key)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    async def reconcile(self, key: str) -> float | None:
        namespace, _ = informer.split_key(key)
        service = self.services.indexer.get(key)
        existing = self.slices.indexer.by_index(_SERVICE_INDEX, key)
        if service is None:
            # The garbage collector would delete them through the owner reference; doing it
            # here does not depend on it and costs nothing more.
            self.tracker.forget(key)
            for slice_ in existing:
                await self._delete(key, slice_)
            return None
        spec = service.get("spec") or {}
        if ep.service_selector(service) is None or spec.get("type") == "ExternalName":
            return None
        if not self.tracker.caught_up(key):
            return ep.STALE_RETRY
        writes = plan(service, ep.selected_pods(self.pods, service), existing,
                      max_per_slice=self.max_endpoints_per_slice)
        labels = _slice_labels(service)
        for address_type, ports, endpoints in writes.create:
            body: Object = {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": _name_prefix(meta.name_of(service)),
                             "namespace": namespace, "labels": labels,
                             "ownerReferences": [_owner_ref(service)]},
                "addressType": address_type, "endpoints": endpoints, "ports": ports,
            }
            self.tracker.wrote(key, await self.slices_api.create(body, namespace=namespace))
        for slice_, ports, endpoints in writes.update:
            updated = copy.deepcopy(slice_)
            md = meta.metadata(updated)
            md["labels"] = labels
            md["ownerReferences"] = [_owner_ref(service)]
            updated["endpoints"] = endpoints
            updated["ports"] = ports
            self.tracker.wrote(key, await self.slices_api.update(updated, namespace=namespace))
        for slice_ in writes.delete:
            await self._delete(key, slice_)
        return None

    async def _delete(self, key: str, slice_: Object) -> None:
        try:
            await self.slices_api.delete(meta.name_of(slice_), namespace=meta.namespace_of(slice_))
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise
        self.tracker.deleted(key, informer.key_of(slice_))


def _name_prefix(service_name: str) -> str:
    """``<service>-``, cut so that the 5 generated characters still fit 63."""
    prefix = f"{service_name}-"
    return prefix if len(prefix) <= 58 else prefix[:58]

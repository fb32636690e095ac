"""Objects every cluster has from its first start, created (idempotently) at start-up.

The system namespaces, and the ``default/kubernetes`` Service with its Endpoints and
EndpointSlice, which is how pods and in-cluster clients find the API server
(``https://kubernetes.default.svc``), at the first address of the service network; the
Service is created through the Store like any other, so that address is taken from the
allocator (and kept from dynamic allocation) exactly as a user's ``clusterIP`` would be.
"""

from __future__ import annotations

import logging
from typing import Any

from kubling.api.meta import Object
from kubling.apiserver import errors
from kubling.apiserver.registry.registry import Registry

log = logging.getLogger("kubling.apiserver.bootstrap")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _namespace(name: str) -> Object:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _service(cluster_ip: str, port: int) -> Object:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                            "targetPort": port}],
                 "sessionAffinity": "None"},
    }


def _endpoints(address: str, port: int) -> Object:
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    }


def _endpoint_slice(address: str, port: int) -> Object:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }


async def ensure(registry: Registry, *, service_ip: str, address: str, port: int) -> None:
    """Create what is missing; leave what exists (a user may have changed it)."""
    wanted: list[tuple[str, str, str, Object]] = [
        ("", "v1", "namespaces", _namespace(name)) for name in SYSTEM_NAMESPACES
    ]
    wanted += [
        ("", "v1", "services", _service(service_ip, port)),
        ("", "v1", "endpoints", _endpoints(address, port)),
        ("discovery.k8s.io", "v1", "endpointslices", _endpoint_slice(address, port)),
    ]
    for group, version, plural, obj in wanted:
        await _create_if_missing(registry, group, version, plural, obj)


async def _create_if_missing(registry: Registry, group: str, version: str, plural: str,
                             obj: Object) -> None:
    rt = registry.catalogue.lookup(group, version, plural)
    assert rt is not None, plural
    store = registry.store(rt)
    md: dict[str, Any] = obj["metadata"]
    namespace = md.get("namespace", "")
    if await registry.backend.get(store.key(namespace, md["name"])) is not None:
        return
    store.strategy.default(obj)
    try:
        await store.create(obj, namespace=namespace)
    except errors.APIError as err:
        if err.code == 422 and plural == "services":
            # The first service address is taken by a user's Service (the kubernetes one
            # was deleted meanwhile): serve on, as upstream's controller does, and say so.
            log.error("cannot create the %s/%s service: %s", namespace, md["name"],
                      err.message)
            return
        if err.code != 409:  # another server made it first: fine
            raise

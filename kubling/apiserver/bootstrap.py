"""Objects every cluster has from its first start, created (idempotently) at start-up.

The system namespaces, and the ``default/kubernetes`` Service with its Endpoints and
EndpointSlice, which is how pods and in-cluster clients find the API server
(``https://kubernetes.default.svc``), at the first address of the service network; the
Service is created through the Store like any other, so that address is taken from the
allocator (and kept from dynamic allocation) exactly as a user's ``clusterIP`` would be.
And the RBAC roles of joined node agents (``node_rbac``).
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


#: Upstream's ``system:node`` ClusterRole (what a kubelet does: its Node and Lease, the
#: pods bound to it and their status, events, what volumes read, evictions), as
#: (apiGroups, resources, verbs) rules.
_NODE_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("authentication.k8s.io",), ("tokenreviews",), ("create",)),
    (("authorization.k8s.io",), ("localsubjectaccessreviews", "subjectaccessreviews"),
     ("create",)),
    (("",), ("services",), ("get", "list", "watch")),
    (("",), ("nodes",), ("create", "get", "list", "watch")),
    (("",), ("nodes/status",), ("patch", "update")),
    (("",), ("nodes",), ("patch", "update")),
    (("",), ("events",), ("create", "patch", "update")),
    (("",), ("pods",), ("get", "list", "watch")),
    (("",), ("pods",), ("create", "delete")),
    (("",), ("pods/status",), ("patch", "update")),
    (("",), ("pods/eviction",), ("create",)),
    (("",), ("configmaps", "secrets"), ("get", "list", "watch")),
    (("",), ("persistentvolumeclaims", "persistentvolumes"), ("get",)),
    (("",), ("endpoints",), ("get",)),
    (("certificates.k8s.io",), ("certificatesigningrequests",),
     ("create", "get", "list", "watch")),
    (("coordination.k8s.io",), ("leases",), ("create", "delete", "get", "patch", "update")),
    (("storage.k8s.io",), ("volumeattachments",), ("get",)),
    (("",), ("serviceaccounts/token",), ("create",)),
    (("",), ("persistentvolumeclaims/status",), ("get", "patch", "update")),
    (("storage.k8s.io",), ("csidrivers",), ("get", "list", "watch")),
    (("storage.k8s.io",), ("csinodes",), ("create", "delete", "get", "patch", "update")),
    (("node.k8s.io",), ("runtimeclasses",), ("get", "list", "watch")),
)
#: Upstream's ``system:node-proxier`` (kube-proxy's reads, and its events).
_PROXIER_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("",), ("endpoints", "services"), ("list", "watch")),
    (("",), ("nodes",), ("get", "list", "watch")),
    (("", "events.k8s.io"), ("events",), ("create", "patch", "update")),
    (("discovery.k8s.io",), ("endpointslices",), ("list", "watch")),
)
NODES_GROUP = "system:nodes"


def _cluster_role(name: str, rules: tuple[tuple[tuple[str, ...], tuple[str, ...],
                                                tuple[str, ...]], ...]) -> Object:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                     "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": [{"apiGroups": list(groups), "resources": list(resources),
                   "verbs": list(verbs)} for groups, resources, verbs in rules],
    }


def _cluster_role_binding(name: str, subjects: list[tuple[str, str]]) -> Object:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                     "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": who}
                     for kind, who in subjects],
    }


def node_rbac() -> list[tuple[str, Object]]:
    """What joined agents (``system:node:<name>`` in ``system:nodes``) are allowed.

    Upstream authorizes kubelets with the Node authorizer (each node only its own objects)
    and leaves the ``system:node`` binding without subjects; kubling binds the role to the
    ``system:nodes`` group instead, as clusters did before the Node authorizer, and the
    proxier role too, because a kubling agent runs its service proxy with the node's
    credentials (k3s gives kube-proxy its own certificate).
    """
    return [
        ("clusterroles", _cluster_role("system:node", _NODE_RULES)),
        ("clusterroles", _cluster_role("system:node-proxier", _PROXIER_RULES)),
        ("clusterrolebindings", _cluster_role_binding("system:node", [("Group", NODES_GROUP)])),
        ("clusterrolebindings", _cluster_role_binding(
            "system:node-proxier", [("User", "system:kube-proxy"), ("Group", NODES_GROUP)])),
    ]


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
    wanted += [("rbac.authorization.k8s.io", "v1", plural, obj) for plural, obj in node_rbac()]
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

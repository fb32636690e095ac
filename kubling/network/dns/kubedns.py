"""The ``kube-system/kube-dns`` Service that makes the in-process cluster DNS reachable at
``--cluster-dns`` (10.43.0.10) from every pod, as CoreDNS's Service does on k3s.

kubling's DNS runs inside the server, not in a pod, so the Service has no selector: its
EndpointSlice (and Endpoints, which ``kubectl describe svc`` reads) point at the address
the server's DNS listens on, and the service proxy DNATs 10.43.0.10:53 there. Names and
ports are upstream's (``k8s-app: kube-dns``, ports ``dns`` and ``dns-tcp``), so tools that
look for kube-dns find it.
"""

from __future__ import annotations

from kubling.api.meta import Object
from kubling.client import rest

SERVICES = rest.lookup("v1", "services")
ENDPOINTS = rest.lookup("v1", "endpoints")
ENDPOINT_SLICES = rest.lookup("discovery.k8s.io/v1", "endpointslices")
NAMESPACE = "kube-system"
NAME = "kube-dns"
LABELS = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
          "kubernetes.io/cluster-service": "true"}
PORTS = [("dns", "UDP"), ("dns-tcp", "TCP")]


def service(cluster_ip: str) -> Object:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {"clusterIP": cluster_ip, "type": "ClusterIP",
                 "ports": [{"name": n, "protocol": p, "port": 53, "targetPort": 53}
                           for n, p in PORTS]},
    }


def endpoint_slice(address: str, node_name: str, port: int) -> Object:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{NAME}-kubling", "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": NAME,
                                "endpointslice.kubernetes.io/managed-by": "kubling-dns"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "nodeName": node_name,
                       "conditions": {"ready": True, "serving": True, "terminating": False}}],
        "ports": [{"name": n, "protocol": p, "port": port} for n, p in PORTS],
    }


def endpoints(address: str, node_name: str, port: int) -> Object:
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "subsets": [{"addresses": [{"ip": address, "nodeName": node_name}],
                     "ports": [{"name": n, "protocol": p, "port": port} for n, p in PORTS]}],
    }


async def ensure_kube_dns(client: rest.Client, *, cluster_ip: str, address: str,
                          node_name: str, port: int = 53) -> None:
    """Create or refresh the Service, its EndpointSlice and Endpoints (idempotent: a
    restart on another address moves the endpoints)."""
    await _apply(client.resource(SERVICES), service(cluster_ip), keep_spec_ip=True)
    await _apply(client.resource(ENDPOINT_SLICES), endpoint_slice(address, node_name, port))
    await _apply(client.resource(ENDPOINTS), endpoints(address, node_name, port))


async def _apply(resource: rest.Resource, desired: Object, *, keep_spec_ip: bool = False
                 ) -> None:
    name = desired["metadata"]["name"]
    try:
        await resource.create(desired, namespace=NAMESPACE)
        return
    except rest.ApiError as err:
        if not rest.is_already_exists(err):
            raise
    current = await resource.get(name, namespace=NAMESPACE)
    if keep_spec_ip:  # a Service's clusterIP is immutable: only its ports are refreshed
        current["spec"]["ports"] = desired["spec"]["ports"]
    else:
        for key, value in desired.items():
            if key not in ("apiVersion", "kind", "metadata"):
                current[key] = value
    current["metadata"].setdefault("labels", {}).update(desired["metadata"]["labels"])
    await resource.update(current, namespace=NAMESPACE)

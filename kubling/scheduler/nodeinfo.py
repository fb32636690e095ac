"""``PodInfo`` and ``NodeInfo``: the pod and node as the plugins see them, pre-digested.

The API serves plain JSON dicts; reading ``pod["spec"]["containers"][i]["resources"]`` and
parsing ``"128Mi"`` in the per-node loop would dominate a cycle. So each pod is digested once
into a ``PodInfo`` (requests, ports, tolerations, affinity terms) and each node into a
``NodeInfo`` that also keeps running aggregates of the pods on it (requested resources,
used host ports, pods with affinity). Upstream's ``framework/types.go`` has the same split.

Who mutates: only the snapshot (``add_pod``/``remove_pod`` when pods are assumed, bound or
deleted) and preemption, which works on ``clone()``s. Plugins only read.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from kubling.scheduler import affinity, resources, taints

__all__ = ["NodeInfo", "PodInfo", "normalized_image_name"]


def normalized_image_name(image: str) -> str:
    """``nginx`` and ``nginx:latest`` are one image (upstream ImageLocality's rule)."""
    if image.rfind(":") <= image.rfind("/"):
        return image + ":latest"
    return image


def _host_ports(spec: Mapping[str, Any]) -> tuple[tuple[str, str, int], ...]:
    """(hostIP, protocol, hostPort) for every container port that claims a host port."""
    out: list[tuple[str, str, int]] = []
    sidecars = [
        c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"
    ]
    for container in [*(spec.get("containers") or ()), *sidecars]:
        for port in container.get("ports") or ():
            host_port = port.get("hostPort") or 0
            if isinstance(host_port, int) and host_port > 0:
                ip = port.get("hostIP") or "0.0.0.0"
                out.append((ip, port.get("protocol") or "TCP", host_port))
    return tuple(out)


class PodInfo:
    """One pod, digested. Built once per pod per queue entry and reused when assumed."""

    __slots__ = (
        "host_ports",
        "images",
        "key",
        "labels",
        "name",
        "namespace",
        "node_name",
        "non_zero_cpu",
        "non_zero_memory",
        "pod",
        "preferred_affinity_terms",
        "preferred_anti_affinity_terms",
        "priority",
        "requests",
        "required_affinity_terms",
        "required_anti_affinity_terms",
        "start_time",
        "terminating",
        "tolerations",
        "uid",
    )

    def __init__(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        self.pod = pod
        self.name: str = meta.get("name") or ""
        self.namespace: str = meta.get("namespace") or "default"
        self.key = f"{self.namespace}/{self.name}"
        self.uid: str = meta.get("uid") or self.key
        self.labels: Mapping[str, str] = meta.get("labels") or {}
        self.terminating = meta.get("deletionTimestamp") is not None
        priority = spec.get("priority")
        self.priority: int = priority if isinstance(priority, int) else 0
        self.node_name: str = spec.get("nodeName") or ""
        self.start_time: str = status.get("startTime") or ""
        self.requests = resources.pod_requests(pod)
        non_zero = resources.pod_requests(pod, non_missing=True)
        self.non_zero_cpu = non_zero.milli_cpu
        self.non_zero_memory = non_zero.memory
        self.host_ports = _host_ports(spec)
        self.tolerations = taints.parse_tolerations(pod)
        self.images = tuple(
            normalized_image_name(c["image"])
            for key in ("initContainers", "containers")
            for c in spec.get(key) or ()
            if isinstance(c.get("image"), str)
        )
        pod_affinity = spec.get("affinity") or {}
        self.required_affinity_terms, self.preferred_affinity_terms = (
            affinity.parse_pod_affinity_terms(pod_affinity.get("podAffinity"), self.namespace)
        )
        self.required_anti_affinity_terms, self.preferred_anti_affinity_terms = (
            affinity.parse_pod_affinity_terms(
                pod_affinity.get("podAntiAffinity"), self.namespace
            )
        )

    @property
    def has_affinity(self) -> bool:
        """Upstream's ``PodsWithAffinity``: any pod (anti-)affinity term at all."""
        return bool(
            self.required_affinity_terms
            or self.preferred_affinity_terms
            or self.required_anti_affinity_terms
            or self.preferred_anti_affinity_terms
        )

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


class NodeInfo:
    """A node plus the running totals of the pods placed on it."""

    __slots__ = (
        "allocatable",
        "images",
        "labels",
        "name",
        "no_schedule_taints",
        "node",
        "non_zero_cpu",
        "non_zero_memory",
        "pods",
        "pods_with_affinity",
        "pods_with_required_anti_affinity",
        "prefer_no_schedule_taints",
        "requested",
        "taints",
        "unschedulable",
        "used_ports",
    )

    def __init__(self, node: Mapping[str, Any]) -> None:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        self.node = node
        self.name: str = meta.get("name") or ""
        self.labels: Mapping[str, str] = meta.get("labels") or {}
        self.unschedulable = bool(spec.get("unschedulable"))
        self.taints = taints.parse_taints(node)
        self.no_schedule_taints = tuple(
            t for t in self.taints if t.effect in (taints.NO_SCHEDULE, taints.NO_EXECUTE)
        )
        self.prefer_no_schedule_taints = tuple(
            t for t in self.taints if t.effect == taints.PREFER_NO_SCHEDULE
        )
        self.allocatable = resources.Resource.from_list(
            status.get("allocatable") or status.get("capacity")
        )
        self.images: dict[str, int] = {}
        for image in status.get("images") or ():
            for name in image.get("names") or ():
                self.images[name] = int(image.get("sizeBytes") or 0)
        self.pods: list[PodInfo] = []
        self.pods_with_affinity: list[PodInfo] = []
        self.pods_with_required_anti_affinity: list[PodInfo] = []
        self.requested = resources.Resource()
        self.non_zero_cpu = 0
        self.non_zero_memory = 0
        self.used_ports: collections.Counter[tuple[str, str, int]] = collections.Counter()

    def add_pod(self, pod: PodInfo) -> None:
        self.pods.append(pod)
        if pod.has_affinity:
            self.pods_with_affinity.append(pod)
        if pod.required_anti_affinity_terms:
            self.pods_with_required_anti_affinity.append(pod)
        self._account(pod, 1)

    def remove_pod(self, pod: PodInfo) -> bool:
        """Remove the pod with ``pod.uid``; False if it was not here."""
        for i, existing in enumerate(self.pods):
            if existing.uid == pod.uid:
                del self.pods[i]
                break
        else:
            return False
        self.pods_with_affinity = [p for p in self.pods_with_affinity if p.uid != pod.uid]
        self.pods_with_required_anti_affinity = [
            p for p in self.pods_with_required_anti_affinity if p.uid != pod.uid
        ]
        self._account(existing, -1)
        return True

    def _account(self, pod: PodInfo, sign: int) -> None:
        self.requested.add(pod.requests, sign)
        self.non_zero_cpu += sign * pod.non_zero_cpu
        self.non_zero_memory += sign * pod.non_zero_memory
        for port in pod.host_ports:
            self.used_ports[port] += sign
            if self.used_ports[port] <= 0:
                del self.used_ports[port]

    def port_conflicts(self, ip: str, protocol: str, port: int) -> bool:
        """Upstream ``HostPortInfo.CheckConflict``: 0.0.0.0 clashes with every address."""
        if not self.used_ports:
            return False
        if ip == "0.0.0.0":
            return any(p == port and proto == protocol for _, proto, p in self.used_ports)
        return (ip, protocol, port) in self.used_ports or (
            "0.0.0.0", protocol, port
        ) in self.used_ports

    def clone(self) -> NodeInfo:
        """A copy whose pod list and totals can change without touching this one."""
        copy = NodeInfo.__new__(NodeInfo)
        for slot in NodeInfo.__slots__:
            setattr(copy, slot, getattr(self, slot))
        copy.pods = list(self.pods)
        copy.pods_with_affinity = list(self.pods_with_affinity)
        copy.pods_with_required_anti_affinity = list(self.pods_with_required_anti_affinity)
        copy.requested = self.requested.copy()
        copy.used_ports = collections.Counter(self.used_ports)
        return copy

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, pods={len(self.pods)})"

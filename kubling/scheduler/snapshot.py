"""The cluster as one scheduling cycle sees it: nodes with their pods, plus a few listers.

Upstream takes a fresh snapshot of its cache before every cycle; here the snapshot *is* the
cache, updated in place by the wiring (informer events, ``assume`` after a decision,
``remove_pod`` when a binding fails) between cycles, never during one. That keeps a cycle
free of copying, which matters at a thousand nodes.

The extra listers (namespaces, PVCs, PVs, storage classes, PDBs) are plain dicts filled by the
wiring; plugins that need them read them here instead of holding a client.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Any

from kubling.scheduler.nodeinfo import NodeInfo, PodInfo

__all__ = ["Snapshot"]

_TERMINAL = ("Succeeded", "Failed")


def _affinity_counts(info: NodeInfo) -> tuple[int, int]:
    return len(info.pods_with_affinity), len(info.pods_with_required_anti_affinity)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


class Snapshot:
    """Node infos in a stable order (the order the round-robin start index walks)."""

    def __init__(
        self,
        nodes: Iterable[Mapping[str, Any]] = (),
        pods: Iterable[Mapping[str, Any]] = (),
        *,
        namespaces: Iterable[Mapping[str, Any]] = (),
        pvcs: Iterable[Mapping[str, Any]] = (),
        pvs: Iterable[Mapping[str, Any]] = (),
        storage_classes: Iterable[Mapping[str, Any]] = (),
        pdbs: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self.node_infos: list[NodeInfo] = []
        self._by_name: dict[str, NodeInfo] = {}
        self._pod_node: dict[str, str] = {}
        self.image_num_nodes: collections.Counter[str] = collections.Counter()
        #: Pods nominated to a node by preemption, not yet bound (node name -> pods).
        self.nominated: dict[str, list[PodInfo]] = {}
        self.namespace_labels: dict[str, Mapping[str, str]] = {
            _name(ns): (ns.get("metadata") or {}).get("labels") or {} for ns in namespaces
        }
        self.pvcs: dict[tuple[str, str], Mapping[str, Any]] = {
            (_namespace(p), _name(p)): p for p in pvcs
        }
        self.pvs: dict[str, Mapping[str, Any]] = {_name(v): v for v in pvs}
        self.storage_classes: dict[str, Mapping[str, Any]] = {
            _name(s): s for s in storage_classes
        }
        self.pdbs: list[Mapping[str, Any]] = list(pdbs)
        self.generation = 0
        #: Changes only when a node, or a pod with (anti-)affinity terms, comes or goes: the
        #: lists of nodes hosting such pods are rebuilt then, not after every placement.
        self._affinity_generation = 0
        self._affinity_cache: tuple[int, list[NodeInfo], list[NodeInfo]] = (-1, [], [])
        for node in nodes:
            self.add_node(node)
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if (pod.get("spec") or {}).get("nodeName") and phase not in _TERMINAL:
                self.add_pod(PodInfo(pod))

    # -- nodes -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.node_infos)

    def get(self, name: str) -> NodeInfo | None:
        return self._by_name.get(name)

    def add_node(self, node: Mapping[str, Any]) -> NodeInfo:
        """Add or replace a node; pods already on it stay (a node update keeps its pods)."""
        info = NodeInfo(node)
        old = self._by_name.get(info.name)
        if old is not None:
            for pod in old.pods:
                info.add_pod(pod)
            self._count_images(old, -1)
            self.node_infos[self.node_infos.index(old)] = info
        else:
            self.node_infos.append(info)
        self._by_name[info.name] = info
        self._count_images(info, 1)
        self.generation += 1
        self._affinity_generation += 1
        return info

    update_node = add_node

    def remove_node(self, name: str) -> None:
        info = self._by_name.pop(name, None)
        if info is None:
            return
        self.node_infos.remove(info)
        self._count_images(info, -1)
        for pod in info.pods:
            self._pod_node.pop(pod.uid, None)
        self.generation += 1
        self._affinity_generation += 1

    def _count_images(self, info: NodeInfo, sign: int) -> None:
        for name in info.images:
            self.image_num_nodes[name] += sign
            if self.image_num_nodes[name] <= 0:
                del self.image_num_nodes[name]

    # -- pods --------------------------------------------------------------------------

    def add_pod(self, pod: PodInfo, node_name: str | None = None) -> bool:
        """Place a pod on ``node_name`` (default: its ``spec.nodeName``); False if unknown.

        Adding a pod that is already placed moves it, so replaying an informer update is safe.
        """
        target = node_name or pod.node_name
        info = self._by_name.get(target)
        if info is None:
            return False
        self.remove_pod(pod)
        before = _affinity_counts(info)
        info.add_pod(pod)
        if _affinity_counts(info) != before:
            self._affinity_generation += 1
        self._pod_node[pod.uid] = target
        self._drop_nominated(pod)
        self.generation += 1
        return True

    def assume(self, pod: PodInfo, node_name: str) -> bool:
        """Count a just-scheduled pod on its node before the binding is confirmed."""
        return self.add_pod(pod, node_name)

    def remove_pod(self, pod: PodInfo) -> bool:
        """Forget a pod (deleted, or its binding failed); False if it was not placed."""
        target = self._pod_node.pop(pod.uid, None)
        info = self._by_name.get(target) if target else None
        if info is None:
            return False
        before = _affinity_counts(info)
        if not info.remove_pod(pod):
            return False
        if _affinity_counts(info) != before:
            self._affinity_generation += 1
        self.generation += 1
        return True

    def node_of(self, pod: PodInfo) -> str | None:
        return self._pod_node.get(pod.uid)

    def add_nominated_pod(self, pod: PodInfo, node_name: str) -> None:
        """Record that preemption reserved ``node_name`` for ``pod``."""
        self._drop_nominated(pod)
        self.nominated.setdefault(node_name, []).append(pod)

    def _drop_nominated(self, pod: PodInfo) -> None:
        for name, pods in list(self.nominated.items()):
            kept = [p for p in pods if p.uid != pod.uid]
            if len(kept) != len(pods):
                if kept:
                    self.nominated[name] = kept
                else:
                    del self.nominated[name]

    # -- derived lists -----------------------------------------------------------------

    def _affinity_lists(self) -> tuple[list[NodeInfo], list[NodeInfo]]:
        generation, with_affinity, with_anti = self._affinity_cache
        if generation != self._affinity_generation:
            with_affinity = [n for n in self.node_infos if n.pods_with_affinity]
            with_anti = [n for n in self.node_infos if n.pods_with_required_anti_affinity]
            self._affinity_cache = (self._affinity_generation, with_affinity, with_anti)
        return with_affinity, with_anti

    def nodes_with_affinity_pods(self) -> list[NodeInfo]:
        """Nodes hosting a pod with any pod (anti-)affinity term (upstream's list of same)."""
        return self._affinity_lists()[0]

    def nodes_with_required_anti_affinity_pods(self) -> list[NodeInfo]:
        return self._affinity_lists()[1]

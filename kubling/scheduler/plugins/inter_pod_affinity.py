"""InterPodAffinity: place pods near (affinity) or away from (anti-affinity) other pods,
where "near" means sharing a value of the term's ``topologyKey`` label.

pre_filter counts, per (topology key, value), the existing pods that match the incoming
pod's required terms and the existing pods whose anti-affinity rejects the incoming pod;
filter then only looks the node's labels up in those counts. Existing pods' anti-affinity
is symmetric (a pod cannot land next to a pod that refuses it), affinity is not — as
upstream. A pod whose affinity selects itself may start a group on any node with the
topology labels, so the first pod of a self-affine set is not stuck pending forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubling.scheduler.affinity import AffinityTerm, WeightedAffinityTerm
from kubling.scheduler.interface import (
    MAX_NODE_SCORE,
    SKIP,
    SUCCESS,
    CycleState,
    Handle,
    PreFilterResult,
    Status,
)
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.snapshot import Snapshot

NAME = "InterPodAffinity"
ERR_REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_REASON_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"

_AFFINITY = Status.unschedulable(ERR_REASON_AFFINITY, unresolvable=True)
_ANTI_AFFINITY = Status.unschedulable(ERR_REASON_ANTI_AFFINITY)
_EXISTING_ANTI_AFFINITY = Status.unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY)
_FILTER_KEY = NAME + "/filter"
_SCORE_KEY = NAME + "/score"

Counts = dict[tuple[str, str], int]


def _bump(counts: Counts, node: NodeInfo, key: str, delta: int) -> None:
    value = node.labels.get(key)
    if value is not None:
        pair = (key, value)
        total = counts.get(pair, 0) + delta
        if total:
            counts[pair] = total
        else:
            counts.pop(pair, None)


def _matches_all(terms: Iterable[AffinityTerm], pod: PodInfo, snapshot: Snapshot) -> bool:
    ns_labels = snapshot.namespace_labels.get(pod.namespace)
    return all(t.matches(pod.namespace, pod.labels, ns_labels) for t in terms)


class _FilterState:
    __slots__ = ("affinity", "anti_affinity", "existing_anti_affinity")

    def __init__(self) -> None:
        self.existing_anti_affinity: Counts = {}
        self.affinity: Counts = {}
        self.anti_affinity: Counts = {}

    def clone(self) -> _FilterState:
        copy = _FilterState()
        copy.existing_anti_affinity = dict(self.existing_anti_affinity)
        copy.affinity = dict(self.affinity)
        copy.anti_affinity = dict(self.anti_affinity)
        return copy

    def update(
        self, pod: PodInfo, other: PodInfo, node: NodeInfo, snapshot: Snapshot, delta: int
    ) -> None:
        """Count ``other`` (on ``node``) in or out of the incoming ``pod``'s view."""
        pod_ns_labels = snapshot.namespace_labels.get(pod.namespace)
        for term in other.required_anti_affinity_terms:
            if term.matches(pod.namespace, pod.labels, pod_ns_labels):
                _bump(self.existing_anti_affinity, node, term.topology_key, delta)
        if not pod.required_affinity_terms and not pod.required_anti_affinity_terms:
            return
        if pod.required_affinity_terms and _matches_all(
            pod.required_affinity_terms, other, snapshot
        ):
            for term in pod.required_affinity_terms:
                _bump(self.affinity, node, term.topology_key, delta)
        other_ns_labels = snapshot.namespace_labels.get(other.namespace)
        for term in pod.required_anti_affinity_terms:
            if term.matches(other.namespace, other.labels, other_ns_labels):
                _bump(self.anti_affinity, node, term.topology_key, delta)


class InterPodAffinity:
    name = NAME

    def __init__(self, args: Mapping[str, Any]) -> None:
        self._hard_weight = int(args.get("hardPodAffinityWeight", 1))

    # -- filtering ---------------------------------------------------------------------

    def pre_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]:
        with_anti = snapshot.nodes_with_required_anti_affinity_pods()
        has_terms = bool(pod.required_affinity_terms or pod.required_anti_affinity_terms)
        if not has_terms and not with_anti:
            return None, SKIP
        s = _FilterState()
        for node in snapshot.node_infos if has_terms else with_anti:
            for other in node.pods if has_terms else node.pods_with_required_anti_affinity:
                s.update(pod, other, node, snapshot, 1)
        if not has_terms and not s.existing_anti_affinity:
            return None, SKIP  # no existing pod's anti-affinity applies to this pod
        state.write(_FILTER_KEY, s)
        state.write(_FILTER_KEY + "/self", _matches_all(pod.required_affinity_terms, pod, snapshot))
        return None, SUCCESS

    def add_pod(
        self, state: CycleState, pod: PodInfo, pod_to_add: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status:
        state.data[_FILTER_KEY].update(pod, pod_to_add, node, snapshot, 1)
        return SUCCESS

    def remove_pod(
        self, state: CycleState, pod: PodInfo, pod_to_remove: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status:
        state.data[_FILTER_KEY].update(pod, pod_to_remove, node, snapshot, -1)
        return SUCCESS

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        s: _FilterState = state.data[_FILTER_KEY]
        labels = node.labels
        if pod.required_affinity_terms:
            pods_exist = True
            for term in pod.required_affinity_terms:
                value = labels.get(term.topology_key)
                if value is None:
                    return _AFFINITY  # every topology label must exist on the node
                if s.affinity.get((term.topology_key, value), 0) <= 0:
                    pods_exist = False
            if not pods_exist and (s.affinity or not state.data[_FILTER_KEY + "/self"]):
                return _AFFINITY
        if s.anti_affinity:
            for term in pod.required_anti_affinity_terms:
                value = labels.get(term.topology_key)
                if value is not None and s.anti_affinity.get((term.topology_key, value), 0) > 0:
                    return _ANTI_AFFINITY
        if s.existing_anti_affinity:
            existing = s.existing_anti_affinity
            for pair in labels.items():
                if existing.get(pair, 0) > 0:
                    return _EXISTING_ANTI_AFFINITY
        return SUCCESS

    # -- scoring -----------------------------------------------------------------------

    def pre_score(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: Sequence[NodeInfo]
    ) -> Status:
        has_constraints = bool(
            pod.preferred_affinity_terms or pod.preferred_anti_affinity_terms
        )
        candidates = snapshot.node_infos if has_constraints else snapshot.nodes_with_affinity_pods()
        if not candidates:
            return SKIP
        scores: dict[str, dict[str, int]] = {}

        def add(terms: Iterable[WeightedAffinityTerm], target: PodInfo, node: NodeInfo,
                sign: int) -> None:
            ns_labels = snapshot.namespace_labels.get(target.namespace)
            for wt in terms:
                value = node.labels.get(wt.term.topology_key)
                if value is not None and wt.term.matches(target.namespace, target.labels,
                                                         ns_labels):
                    per_key = scores.setdefault(wt.term.topology_key, {})
                    per_key[value] = per_key.get(value, 0) + sign * wt.weight

        for node in candidates:
            if not node.labels:
                continue
            for other in node.pods if has_constraints else node.pods_with_affinity:
                add(pod.preferred_affinity_terms, other, node, 1)
                add(pod.preferred_anti_affinity_terms, other, node, -1)
                if self._hard_weight > 0:
                    hard = [WeightedAffinityTerm(self._hard_weight, t)
                            for t in other.required_affinity_terms]
                    add(hard, pod, node, 1)
                add(other.preferred_affinity_terms, pod, node, 1)
                add(other.preferred_anti_affinity_terms, pod, node, -1)
        if not scores:
            return SKIP
        state.write(_SCORE_KEY, scores)
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        scores: dict[str, dict[str, int]] = state.data[_SCORE_KEY]
        total = 0
        for key, per_value in scores.items():
            value = node.labels.get(key)
            if value is not None:
                total += per_value.get(value, 0)
        return total

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int]
    ) -> None:
        """Min-max scaling: scores may be negative (anti-affinity), so upstream shifts them."""
        if not scores:
            return
        low, high = min(scores), max(scores)
        spread = high - low
        for i, score in enumerate(scores):
            scores[i] = int(MAX_NODE_SCORE * ((score - low) / spread)) if spread > 0 else 0


def new(args: Mapping[str, Any], handle: Handle) -> InterPodAffinity:
    return InterPodAffinity(args)

"""PodTopologySpread: keep matching pods evenly spread over topology domains (zones, nodes).

``DoNotSchedule`` constraints filter: placing the pod in a domain must not make that
domain's count exceed the emptiest domain's by more than ``maxSkew`` (with fewer than
``minDomains`` domains the emptiest counts as zero). ``ScheduleAnyway`` constraints only
score: fewer matching pods in the node's domains is better. Only nodes the pod could use
(its node affinity, and taints if ``nodeTaintsPolicy: Honor``) define the domains.

A pod without constraints of its own gets the cluster's default ones (``defaultingType:
System``, upstream's defaults): spread softly over nodes (maxSkew 3) and zones (maxSkew 5)
among the pods its Services and controller select (``owners.OwnerSelectors``). With those
defaults a node missing the zone label is still scored by its hostname.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kubling.api import labels
from kubling.scheduler import affinity, taints
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
from kubling.scheduler.owners import OwnerSelectors
from kubling.scheduler.snapshot import Snapshot

NAME = "PodTopologySpread"
ERR_REASON_CONSTRAINTS_NOT_MATCH = "node(s) didn't match pod topology spread constraints"
ERR_REASON_NODE_LABEL_NOT_MATCH = ERR_REASON_CONSTRAINTS_NOT_MATCH + " (missing required label)"
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
#: Upstream's system default constraints: (topologyKey, maxSkew), both ScheduleAnyway.
SYSTEM_DEFAULTS = ((HOSTNAME, 3), (ZONE, 5))

_REJECT = Status.unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH)
_MISSING_LABEL = Status.unschedulable(ERR_REASON_NODE_LABEL_NOT_MATCH, unresolvable=True)
_FILTER_KEY = NAME + "/filter"
_SCORE_KEY = NAME + "/score"


@dataclasses.dataclass(frozen=True, slots=True)
class Constraint:
    max_skew: int
    topology_key: str
    selector: labels.Selector
    min_domains: int
    honor_node_affinity: bool
    honor_taints: bool


def default_constraints(pod: PodInfo, when: str,
                        owners: OwnerSelectors | None) -> tuple[Constraint, ...]:
    """The system defaults for a pod without constraints: soft only, and only when
    something (a Service, its controller) says which pods it belongs with."""
    if when != "ScheduleAnyway" or owners is None:
        return ()
    selector = owners.default_selector(pod)
    if selector.empty:
        return ()
    return tuple(Constraint(max_skew=skew, topology_key=key, selector=selector, min_domains=1,
                            honor_node_affinity=True, honor_taints=False)
                 for key, skew in SYSTEM_DEFAULTS)


def constraints_of(pod: PodInfo, when: str) -> tuple[Constraint, ...]:
    """The pod's constraints with ``whenUnsatisfiable == when``; bad selectors match nothing."""
    out = []
    for raw in (pod.pod.get("spec") or {}).get("topologySpreadConstraints") or ():
        if (raw.get("whenUnsatisfiable") or "DoNotSchedule") != when:
            continue
        try:
            selector = labels.from_label_selector(raw.get("labelSelector"))
            for key in raw.get("matchLabelKeys") or ():
                if key in pod.labels:
                    req = labels.Requirement.new(key, labels.Operator.IN, (pod.labels[key],))
                    selector = selector.add(req)
        except labels.SelectorError:
            selector = labels.nothing()
        out.append(Constraint(
            max_skew=int(raw.get("maxSkew") or 1),
            topology_key=str(raw.get("topologyKey") or ""),
            selector=selector,
            min_domains=int(raw.get("minDomains") or 1),
            honor_node_affinity=(raw.get("nodeAffinityPolicy") or "Honor") == "Honor",
            honor_taints=(raw.get("nodeTaintsPolicy") or "Ignore") == "Honor",
        ))
    return tuple(out)


def count_matching(node: NodeInfo, selector: labels.Selector, namespace: str) -> int:
    """Pods on ``node`` in ``namespace`` the selector matches; terminating pods do not count."""
    if selector.empty:
        return 0
    return sum(
        1 for p in node.pods
        if p.namespace == namespace and not p.terminating and selector.matches(p.labels)
    )


def _has_all_keys(node: NodeInfo, constraints: Sequence[Constraint]) -> bool:
    return all(c.topology_key in node.labels for c in constraints)


def _included(
    c: Constraint, pod: PodInfo, node: NodeInfo, required: affinity.RequiredNodeAffinity
) -> bool:
    if c.honor_node_affinity and not required.matches(node.labels, node.name):
        return False
    return not (
        c.honor_taints and taints.find_untolerated(node.no_schedule_taints, pod.tolerations)
    )


class _FilterState:
    """Matching pods per (key, value) domain, and the emptiest domain's count per key."""

    __slots__ = ("constraints", "counts", "domains", "minimum", "self_match")

    def __init__(self, constraints: tuple[Constraint, ...], pod: PodInfo) -> None:
        self.constraints = constraints
        self.self_match = tuple(int(c.selector.matches(pod.labels)) for c in constraints)
        self.counts: dict[tuple[str, str], int] = {}
        self.domains: dict[str, int] = {}
        self.minimum: dict[str, int] = {}

    def recompute(self) -> None:
        self.domains.clear()
        self.minimum.clear()
        for (key, _), count in self.counts.items():
            self.domains[key] = self.domains.get(key, 0) + 1
            self.minimum[key] = min(self.minimum.get(key, count), count)

    def clone(self) -> _FilterState:
        copy = _FilterState.__new__(_FilterState)
        copy.constraints, copy.self_match = self.constraints, self.self_match
        copy.counts, copy.domains = dict(self.counts), dict(self.domains)
        copy.minimum = dict(self.minimum)
        return copy

    def update(self, pod: PodInfo, other: PodInfo, node: NodeInfo, delta: int) -> None:
        if other.namespace != pod.namespace or not _has_all_keys(node, self.constraints):
            return
        for c in self.constraints:
            pair = (c.topology_key, node.labels[c.topology_key])
            if pair in self.counts and c.selector.matches(other.labels):
                self.counts[pair] += delta
        self.recompute()


class PodTopologySpread:
    name = NAME

    def __init__(self, handle: Handle | None = None, *, system_defaults: bool = True) -> None:
        self.handle = handle
        self.system_defaults = system_defaults

    def _soft_constraints(self, pod: PodInfo) -> tuple[tuple[Constraint, ...], bool]:
        """The pod's ScheduleAnyway constraints, and whether they are the defaults."""
        if (pod.pod.get("spec") or {}).get("topologySpreadConstraints"):
            return constraints_of(pod, "ScheduleAnyway"), False
        if not self.system_defaults or self.handle is None:
            return (), False
        return default_constraints(pod, "ScheduleAnyway", self.handle.owner_selectors), True

    def pre_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]:
        constraints = constraints_of(pod, "DoNotSchedule")
        if not constraints:
            return None, SKIP
        s = _FilterState(constraints, pod)
        required = affinity.RequiredNodeAffinity.of(pod.pod)
        for node in snapshot.node_infos:
            if not _has_all_keys(node, constraints):
                continue
            for c in constraints:
                if _included(c, pod, node, required):
                    pair = (c.topology_key, node.labels[c.topology_key])
                    s.counts[pair] = s.counts.get(pair, 0) + count_matching(
                        node, c.selector, pod.namespace
                    )
        s.recompute()
        state.write(_FILTER_KEY, s)
        return None, SUCCESS

    def add_pod(
        self, state: CycleState, pod: PodInfo, pod_to_add: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status:
        state.data[_FILTER_KEY].update(pod, pod_to_add, node, 1)
        return SUCCESS

    def remove_pod(
        self, state: CycleState, pod: PodInfo, pod_to_remove: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status:
        state.data[_FILTER_KEY].update(pod, pod_to_remove, node, -1)
        return SUCCESS

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        s: _FilterState = state.data[_FILTER_KEY]
        for c, self_match in zip(s.constraints, s.self_match, strict=True):
            value = node.labels.get(c.topology_key)
            if value is None:
                return _MISSING_LABEL
            minimum = s.minimum.get(c.topology_key, 0)
            if s.domains.get(c.topology_key, 0) < c.min_domains:
                minimum = 0
            skew = s.counts.get((c.topology_key, value), 0) + self_match - minimum
            if skew > c.max_skew:
                return _REJECT
        return SUCCESS

    # -- scoring -----------------------------------------------------------------------

    def pre_score(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: Sequence[NodeInfo]
    ) -> Status:
        constraints, defaulted = self._soft_constraints(pod)
        if not constraints:
            return SKIP
        # A pod's own constraints need every key on a node; the defaults score what exists.
        ignored = set() if defaulted else {
            n.name for n in nodes if not _has_all_keys(n, constraints)}
        counts: dict[tuple[str, str], int] = {}
        sizes = [0] * len(constraints)
        for node in nodes:
            if node.name in ignored:
                continue
            for i, c in enumerate(constraints):
                pair = (c.topology_key, node.labels.get(c.topology_key, ""))
                if c.topology_key != HOSTNAME and pair not in counts:
                    counts[pair] = 0
                    sizes[i] += 1
        weights = tuple(
            math.log((len(nodes) - len(ignored) if c.topology_key == HOSTNAME else size) + 2)
            for c, size in zip(constraints, sizes, strict=True)
        )
        required = affinity.RequiredNodeAffinity.of(pod.pod)
        for node in snapshot.node_infos:
            if not defaulted and not _has_all_keys(node, constraints):
                continue
            for c in constraints:
                pair = (c.topology_key, node.labels.get(c.topology_key, ""))
                if pair in counts and _included(c, pod, node, required):
                    counts[pair] += count_matching(node, c.selector, pod.namespace)
        state.write(_SCORE_KEY, (constraints, weights, counts, ignored))
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        constraints, weights, counts, ignored = state.data[_SCORE_KEY]
        if node.name in ignored:
            return 0
        total = 0.0
        for c, weight in zip(constraints, weights, strict=True):
            value = node.labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == HOSTNAME:
                count = count_matching(node, c.selector, pod.namespace)
            else:
                count = counts[(c.topology_key, value)]
            total += count * weight + (c.max_skew - 1)
        return math.floor(total + 0.5)  # Go's math.Round: halves away from zero

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int]
    ) -> None:
        """Fewer matching pods is better: invert within the observed range, as upstream."""
        ignored: set[str] = state.data[_SCORE_KEY][3]
        kept = [s for n, s in zip(nodes, scores, strict=True) if n.name not in ignored]
        low, high = min(kept, default=0), max(kept, default=0)
        for i, node in enumerate(nodes):
            if node.name in ignored:
                scores[i] = 0
            elif high == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (high + low - scores[i]) // high


def new(args: Mapping[str, Any], handle: Handle) -> PodTopologySpread:
    """``defaultingType: List`` with no ``defaultConstraints`` turns the defaults off."""
    return PodTopologySpread(handle, system_defaults=args.get("defaultingType", "System")
                             == "System")

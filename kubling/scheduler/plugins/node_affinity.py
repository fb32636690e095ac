"""NodeAffinity: ``spec.nodeSelector`` and required node affinity filter nodes; preferred
node affinity terms add their weights to a node's score.

A required term pinned to node names (``matchFields metadata.name In``) narrows the whole
cycle to those nodes in pre_filter, so a pod meant for one node does not cost a full scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubling.scheduler import affinity
from kubling.scheduler.interface import SKIP, SUCCESS, CycleState, Handle, PreFilterResult, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.plugins import helpers
from kubling.scheduler.snapshot import Snapshot

NAME = "NodeAffinity"
ERR_REASON_POD = "node(s) didn't match Pod's node affinity/selector"
ERR_REASON_CONFLICT = "pod affinity terms conflict"

_REJECT = Status.unschedulable(ERR_REASON_POD, unresolvable=True)
_FILTER_KEY = NAME + "/filter"
_SCORE_KEY = NAME + "/score"


def _pinned_node_names(required: affinity.RequiredNodeAffinity) -> frozenset[str] | None:
    """Union over terms of their ``metadata.name In`` pins; None if any term is unpinned."""
    if required.terms is None:
        return None
    names: set[str] = set()
    for term in required.terms:
        if term.names_in is None:
            return None
        names |= term.names_in
    return frozenset(names)


class NodeAffinity:
    name = NAME

    def pre_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]:
        required = affinity.RequiredNodeAffinity.of(pod.pod)
        if required.empty:
            return None, SKIP
        state.write(_FILTER_KEY, required)
        names = _pinned_node_names(required)
        if names is None:
            return None, SUCCESS
        if not names:
            return None, Status.unschedulable(ERR_REASON_CONFLICT, unresolvable=True)
        return PreFilterResult(names), SUCCESS

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        required: affinity.RequiredNodeAffinity = state.data[_FILTER_KEY]
        return SUCCESS if required.matches(node.labels, node.name) else _REJECT

    def pre_score(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: Sequence[NodeInfo]
    ) -> Status:
        preferred = affinity.preferred_node_terms(pod.pod)
        if not preferred:
            return SKIP
        state.write(_SCORE_KEY, preferred)
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        preferred: tuple[tuple[int, affinity.NodeSelectorTerm], ...] = state.data[_SCORE_KEY]
        return sum(w for w, term in preferred if term.matches(node.labels, node.name))

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int]
    ) -> None:
        helpers.default_normalize_score(scores, reverse=False)


def new(args: Mapping[str, Any], handle: Handle) -> NodeAffinity:
    return NodeAffinity()

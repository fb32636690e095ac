"""Preemption: when a pod fits nowhere, find the node where evicting the fewest and least
important lower-priority pods would make it fit (upstream ``framework/preemption``).

Pure: it reads the snapshot and re-runs the profile's filters on *copies* of nodes with
pods taken away; it deletes nothing. The wiring deletes the returned victims and sets
``status.nominatedNodeName``; the pod is scheduled on a later cycle once they are gone.

The order of the steps is upstream's, and so are the messages, because they end up in the
pod's FailedScheduling event after ``preemption:``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

from kubling.api import labels
from kubling.scheduler.interface import SUCCESS, Code, CycleState, Handle, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.snapshot import Snapshot

__all__ = [
    "MIN_CANDIDATE_NODES_ABSOLUTE",
    "MIN_CANDIDATE_NODES_PERCENTAGE",
    "NOT_HELPFUL",
    "Candidate",
    "PreemptionResult",
    "pick_one_node",
    "pod_eligible_to_preempt_others",
    "preempt",
    "select_victims_on_node",
]

NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
#: Upstream stops the dry run once it has this many candidates (10% of nodes, at least 100).
MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100
_INT32_OFFSET = 2**31


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    node: str
    victims: tuple[PodInfo, ...]
    pdb_violations: int


@dataclasses.dataclass(frozen=True, slots=True)
class PreemptionResult:
    """Success carries the node and victims; otherwise ``status`` says why not."""

    status: Status
    nominated_node: str | None = None
    victims: tuple[PodInfo, ...] = ()
    node_statuses: Mapping[str, Status] = dataclasses.field(default_factory=dict)


def pod_eligible_to_preempt_others(
    pod: PodInfo, snapshot: Snapshot, statuses: Mapping[str, Status]
) -> tuple[bool, str]:
    """A ``preemptionPolicy: Never`` pod may not preempt; nor one whose earlier victims on
    its nominated node are still terminating (it would only evict more pods)."""
    spec = pod.pod.get("spec") or {}
    if spec.get("preemptionPolicy") == "Never":
        return False, "not eligible due to preemptionPolicy=Never."
    nominated = (pod.pod.get("status") or {}).get("nominatedNodeName") or ""
    if nominated:
        status = statuses.get(nominated)
        if status is not None and status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
            return True, ""
        node = snapshot.get(nominated)
        if node is not None and any(
            p.priority < pod.priority and p.terminating for p in node.pods
        ):
            return False, "not eligible due to a terminating pod on the nominated node."
    return True, ""


def _more_important(pod: PodInfo) -> tuple[int, str]:
    """Sort key: higher priority first, then the earlier started (RFC 3339 sorts as text)."""
    return (-pod.priority, pod.start_time or "9999")


def _split_by_pdb(
    pods: Sequence[PodInfo], pdbs: Sequence[Mapping[str, Any]]
) -> tuple[list[PodInfo], list[PodInfo]]:
    """(violating, non-violating): evicting a violating pod would exceed a PDB's budget."""
    allowed = [int((p.get("status") or {}).get("disruptionsAllowed") or 0) for p in pdbs]
    selectors = []
    for pdb in pdbs:
        try:
            selectors.append(labels.from_label_selector((pdb.get("spec") or {}).get("selector")))
        except labels.SelectorError:
            selectors.append(labels.nothing())
    violating: list[PodInfo] = []
    fine: list[PodInfo] = []
    for pod in pods:
        violated = False
        if pod.labels:
            for i, pdb in enumerate(pdbs):
                meta = pdb.get("metadata") or {}
                if (meta.get("namespace") or "default") != pod.namespace:
                    continue
                selector = selectors[i]
                if selector.empty or not selector.matches(pod.labels):
                    continue
                if pod.name in ((pdb.get("status") or {}).get("disruptedPods") or {}):
                    continue  # already counted by the API server's eviction
                allowed[i] -= 1
                if allowed[i] < 0:
                    violated = True
        (violating if violated else fine).append(pod)
    return violating, fine


def select_victims_on_node(
    handle: Handle, state: CycleState, pod: PodInfo, node: NodeInfo, snapshot: Snapshot,
    pdbs: Sequence[Mapping[str, Any]],
) -> tuple[list[PodInfo], int, Status]:
    """Remove every lower-priority pod; if the pod then fits, add back as many as possible,
    most important first (PDB-protected ones before the rest). What stays out are victims."""
    node = node.clone()
    state = state.clone()
    potential = [p for p in node.pods if p.priority < pod.priority]
    if not potential:
        return [], 0, Status.unschedulable(NO_VICTIMS, unresolvable=True)
    for victim in potential:
        node.remove_pod(victim)
        status = handle.run_pre_filter_extension_remove_pod(state, pod, victim, node, snapshot)
        if not status.is_success:
            return [], 0, status
    status = handle.run_filter_plugins_with_nominated_pods(state, pod, node, snapshot)
    if not status.is_success:
        return [], 0, status
    potential.sort(key=_more_important)
    violating, non_violating = _split_by_pdb(potential, pdbs)
    victims: list[PodInfo] = []
    violations = 0
    for group, counts in ((violating, True), (non_violating, False)):
        for candidate in group:
            node.add_pod(candidate)
            handle.run_pre_filter_extension_add_pod(state, pod, candidate, node, snapshot)
            if handle.run_filter_plugins_with_nominated_pods(state, pod, node, snapshot).is_success:
                continue  # reprieved
            node.remove_pod(candidate)
            handle.run_pre_filter_extension_remove_pod(state, pod, candidate, node, snapshot)
            victims.append(candidate)
            violations += counts
    return victims, violations, SUCCESS


def _earliest_start_of_most_important(victims: Sequence[PodInfo]) -> str:
    top = max(v.priority for v in victims)
    return min((v.start_time or "9999") for v in victims if v.priority == top)


def pick_one_node(candidates: Sequence[Candidate]) -> Candidate:
    """Upstream's tie-breakers, in order: fewest PDB violations, lowest highest-priority
    victim, lowest sum of priorities, fewest victims, latest start of the most important
    victims; then the first candidate."""
    if not candidates:
        raise ValueError("no candidates")
    for candidate in candidates:
        if not candidate.victims:
            return candidate
    criteria = (
        lambda c: -c.pdb_violations,
        lambda c: -max(v.priority for v in c.victims),
        lambda c: -sum(v.priority + _INT32_OFFSET for v in c.victims),
        lambda c: -len(c.victims),
    )
    remaining = list(candidates)
    for criterion in criteria:
        best = max(criterion(c) for c in remaining)
        remaining = [c for c in remaining if criterion(c) == best]
        if len(remaining) == 1:
            return remaining[0]
    latest = max(_earliest_start_of_most_important(c.victims) for c in remaining)
    remaining = [c for c in remaining if _earliest_start_of_most_important(c.victims) == latest]
    return remaining[0]


def _not_available(statuses: Mapping[str, Status]) -> str:
    histogram: dict[str, int] = {}
    for status in statuses.values():
        for reason in status.reasons:
            histogram[reason] = histogram.get(reason, 0) + 1
    lines = sorted(f"{count} {reason}" for reason, count in histogram.items())
    return f"0/{len(statuses)} nodes are available: {', '.join(lines)}."


def preempt(
    handle: Handle, state: CycleState, pod: PodInfo, snapshot: Snapshot,
    statuses: Mapping[str, Status], *, rng: random.Random | None = None,
) -> PreemptionResult:
    """Find victims for ``pod`` given each node's filter status from the failed cycle."""
    eligible, why = pod_eligible_to_preempt_others(pod, snapshot, statuses)
    if not eligible:
        return PreemptionResult(Status.unschedulable(why))
    node_statuses: dict[str, Status] = {}
    potential: list[NodeInfo] = []
    not_helpful = Status.unschedulable(NOT_HELPFUL, unresolvable=True)
    for node in snapshot.node_infos:
        status = statuses.get(node.name)
        if status is not None and status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
            node_statuses[node.name] = not_helpful
        else:
            potential.append(node)
    if not potential:
        return PreemptionResult(Status.unschedulable(_not_available(node_statuses)),
                                node_statuses=node_statuses)
    wanted = min(
        len(potential),
        max(len(potential) * MIN_CANDIDATE_NODES_PERCENTAGE // 100, MIN_CANDIDATE_NODES_ABSOLUTE),
    )
    offset = (rng or random.Random()).randrange(len(potential))
    fine: list[Candidate] = []
    violating: list[Candidate] = []
    for i in range(len(potential)):
        node = potential[(offset + i) % len(potential)]
        victims, violations, status = select_victims_on_node(
            handle, state, pod, node, snapshot, snapshot.pdbs
        )
        if status.is_success and victims:
            (violating if violations else fine).append(Candidate(node.name, tuple(victims),
                                                                 violations))
            if fine and len(fine) + len(violating) >= wanted:
                break
        elif status.is_success:
            node_statuses[node.name] = Status.error(
                f'expected at least one victim pod on node "{node.name}"'
            )
        else:
            node_statuses[node.name] = status
    candidates = fine + violating
    if not candidates:
        return PreemptionResult(Status.unschedulable(_not_available(node_statuses)),
                                node_statuses=node_statuses)
    chosen = pick_one_node(candidates)
    return PreemptionResult(SUCCESS, chosen.node, chosen.victims, node_statuses)

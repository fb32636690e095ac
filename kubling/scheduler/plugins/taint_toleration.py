"""TaintToleration: NoSchedule/NoExecute taints repel pods that do not tolerate them;
PreferNoSchedule taints only lower a node's score.

The filter reports the first untolerated taint as upstream does,
``node(s) had untolerated taint {key: value}``, so the event says which taint to tolerate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubling.scheduler import taints
from kubling.scheduler.interface import SKIP, SUCCESS, CycleState, Handle, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.plugins import helpers
from kubling.scheduler.snapshot import Snapshot

NAME = "TaintToleration"


def untolerated_reason(taint: taints.Taint) -> str:
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


class TaintToleration:
    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        if not node.no_schedule_taints:
            return SUCCESS
        taint = taints.find_untolerated(node.no_schedule_taints, pod.tolerations)
        if taint is None:
            return SUCCESS
        return Status.unschedulable(untolerated_reason(taint), unresolvable=True)

    def pre_score(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: Sequence[NodeInfo]
    ) -> Status:
        """Without PreferNoSchedule taints every node scores the same: skip the per-node call."""
        return SUCCESS if any(n.prefer_no_schedule_taints for n in nodes) else SKIP

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        """How many PreferNoSchedule taints the pod does not tolerate (fewer is better)."""
        if not node.prefer_no_schedule_taints:
            return 0
        tolerations = tuple(
            t for t in pod.tolerations if t.effect in ("", taints.PREFER_NO_SCHEDULE)
        )
        return sum(
            1 for t in node.prefer_no_schedule_taints if not taints.tolerates(tolerations, t)
        )

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], scores: list[int]
    ) -> None:
        helpers.default_normalize_score(scores, reverse=True)


def new(args: Mapping[str, Any], handle: Handle) -> TaintToleration:
    return TaintToleration()

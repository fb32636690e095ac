"""NodeUnschedulable: cordoned nodes (``spec.unschedulable``) take no new pods.

A pod that tolerates the ``node.kubernetes.io/unschedulable:NoSchedule`` taint (DaemonSet
pods do) may still land there, exactly as upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubling.scheduler import taints
from kubling.scheduler.interface import SUCCESS, CycleState, Handle, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo

NAME = "NodeUnschedulable"
ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"
UNSCHEDULABLE_TAINT = taints.Taint("node.kubernetes.io/unschedulable", "", taints.NO_SCHEDULE)

_REJECT = Status.unschedulable(ERR_REASON_UNSCHEDULABLE, unresolvable=True)


class NodeUnschedulable:
    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        if not node.unschedulable:
            return SUCCESS
        if taints.tolerates(pod.tolerations, UNSCHEDULABLE_TAINT):
            return SUCCESS
        return _REJECT


def new(args: Mapping[str, Any], handle: Handle) -> NodeUnschedulable:
    return NodeUnschedulable()

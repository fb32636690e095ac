"""NodeName: a pod that names its node (``spec.nodeName``) fits only that node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubling.scheduler.interface import SKIP, SUCCESS, CycleState, Handle, PreFilterResult, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.snapshot import Snapshot

NAME = "NodeName"
ERR_REASON = "node(s) didn't match the requested node name"

_REJECT = Status.unschedulable(ERR_REASON, unresolvable=True)


class NodeName:
    name = NAME

    def pre_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]:
        """Most pods name no node: skip the per-node call for them altogether."""
        return None, (SUCCESS if pod.node_name else SKIP)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        if not pod.node_name or pod.node_name == node.name:
            return SUCCESS
        return _REJECT


def new(args: Mapping[str, Any], handle: Handle) -> NodeName:
    return NodeName()

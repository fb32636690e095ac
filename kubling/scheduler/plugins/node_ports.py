"""NodePorts: two pods cannot hold the same host port (protocol, address) on one node.

``0.0.0.0`` (the default ``hostIP``) clashes with every address, as upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubling.scheduler.interface import SKIP, SUCCESS, CycleState, Handle, PreFilterResult, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.snapshot import Snapshot

NAME = "NodePorts"
ERR_REASON = "node(s) didn't have free ports for the requested pod ports"

_REJECT = Status.unschedulable(ERR_REASON)


class NodePorts:
    name = NAME

    def pre_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]:
        """Pods without host ports (nearly all) skip this plugin's per-node call."""
        return None, (SUCCESS if pod.host_ports else SKIP)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        for ip, protocol, port in pod.host_ports:
            if node.port_conflicts(ip, protocol, port):
                return _REJECT
        return SUCCESS


def new(args: Mapping[str, Any], handle: Handle) -> NodePorts:
    return NodePorts()

"""NodeResourcesBalancedAllocation: prefer nodes whose CPU and memory would be used in
similar proportions, so no node runs out of one while the other sits idle.

Best-effort pods (no requests) are skipped, as upstream does since 1.33: they would add
nothing to either share, and scoring them only herds them onto the same nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubling.scheduler.interface import SKIP, SUCCESS, CycleState, Handle, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.plugins import resource_allocation
from kubling.scheduler.snapshot import Snapshot

NAME = "NodeResourcesBalancedAllocation"


class BalancedAllocation:
    name = NAME

    def __init__(self, args: Mapping[str, Any]) -> None:
        self._specs = resource_allocation.parse_resources(args)
        self._default = [s.name for s in self._specs] == ["cpu", "memory"]

    def pre_score(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: Sequence[NodeInfo]
    ) -> Status:
        if all(pod.requests.get(s.name) == 0 for s in self._specs):
            return SKIP
        return SUCCESS

    def score_nodes(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]
    ) -> list[int]:
        """``score`` for every node: the two-resource loop inlined, same arithmetic."""
        if not self._default:
            return [self.score(state, pod, node) for node in nodes]
        pod_cpu, pod_mem = pod.requests.milli_cpu, pod.requests.memory
        scores = []
        for node in nodes:
            alloc = node.allocatable
            cpu_cap, mem_cap = alloc.milli_cpu, alloc.memory
            if cpu_cap and mem_cap:
                used = node.requested
                cpu = min((used.milli_cpu + pod_cpu) / cpu_cap, 1.0)
                mem = min((used.memory + pod_mem) / mem_cap, 1.0)
                scores.append(int((1 - abs(cpu - mem) / 2) * 100))
            else:
                scores.append(self.score(state, pod, node))
        return scores

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        if self._default:
            # cpu and memory only: upstream's two-resource shortcut, inlined for the hot loop.
            cpu_cap, mem_cap = node.allocatable.milli_cpu, node.allocatable.memory
            if cpu_cap and mem_cap:
                cpu = min((node.requested.milli_cpu + pod.requests.milli_cpu) / cpu_cap, 1.0)
                mem = min((node.requested.memory + pod.requests.memory) / mem_cap, 1.0)
                return int((1 - abs(cpu - mem) / 2) * 100)
        pairs = [
            resource_allocation.allocatable_and_requested(node, pod, s.name, use_requested=True)
            for s in self._specs
        ]
        return resource_allocation.balanced(pairs)


def new(args: Mapping[str, Any], handle: Handle) -> BalancedAllocation:
    return BalancedAllocation(args)
